"""Operations: health and readiness, metrics, logs, per-request timing, request records, memory."""
