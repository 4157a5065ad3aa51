"""A client written as the Home Assistant integration is: aiohttp with ``trust_env=True`` and the real service's
URLs as constants. It gets a token from VK Cloud's token endpoint, then recognizes a photo with it. Nothing here
knows about the emulator: ``HTTPS_PROXY`` and ``SSL_CERT_FILE`` decide where it goes and whom it trusts.

Usage: python aiohttp_client.py PHOTO
Prints the token endpoint's JSON and the recognize envelope, one line each.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiohttp

TOKEN_URL = "https://mcs.mail.ru/auth/oauth/v1/token"
API_URL = "https://smarty.mail.ru/api/v1"


async def main(photo: Path) -> None:
    async with aiohttp.ClientSession(trust_env=True, timeout=aiohttp.ClientTimeout(total=60)) as session:
        credentials = {"client_id": "home-assistant", "client_secret": "secret", "grant_type": "client_credentials"}
        async with session.post(TOKEN_URL, json=credentials) as response:
            response.raise_for_status()
            token = await response.json()
        form = aiohttp.FormData()
        form.add_field("photo", photo.read_bytes(), filename=photo.name, content_type="image/jpeg")
        form.add_field("meta", json.dumps({"space": "5", "images": [{"name": "photo"}], "update_embedding": False}))
        query = {"oauth_token": token["access_token"], "oauth_provider": "mcs"}
        async with session.post(f"{API_URL}/persons/recognize", params=query, data=form) as response:
            response.raise_for_status()
            envelope = await response.read()
    print(json.dumps(token))
    print(envelope.decode())


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
