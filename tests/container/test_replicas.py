"""Replicas as containers: two containers of the image, on different ports, with ``SMARTY_DATABASE_URL`` pointing
at one PostgreSQL database, behave as one service."""

from __future__ import annotations

import httpx
import pytest

from tests.container.launch import TOKEN, Podman, post, recognized, replicas, set_person
from tests.support.emulator_server import fixture
from tests.support.postgres import PostgresCluster

pytestmark = [pytest.mark.container, pytest.mark.slow]


def test_two_containers_on_one_database_act_as_one_service(
    podman: Podman, image: str, postgres: PostgresCluster
) -> None:
    database = postgres.create_database("containers")  # on 127.0.0.1: the containers share the host's network
    with replicas(podman, image, 2, {"SMARTY_DATABASE_URL": database}) as (first, second):
        assert first.port != second.port
        with (
            httpx.Client(base_url=first.base_url, timeout=120) as one,
            httpx.Client(base_url=second.base_url, timeout=120) as other,
        ):
            # A set through one replica is recognized through the other, and the other way round.
            set_person(one, 4, 7, fixture("people/biden/biden.jpg"))
            assert [p["tag"] for p in recognized(other, 4, fixture("people/biden/biden2.jpg"))] == ["person7"]
            set_person(other, 4, 8, fixture("people/obama/obama.jpg"))
            assert [p["tag"] for p in recognized(one, 4, fixture("people/obama/obama2.jpg"))] == ["person8"]
            # create_new through the other replica continues the ids the first one saw.
            meta = {"space": "4", "create_new": True, "images": [{"name": "f"}]}
            created = post(other, "recognize", meta, {"f": fixture("people/kit_harington/john1.jpeg")}).json()
            assert [p["tag"] for p in created["body"]["objects"][0]["persons"]] == ["person9"]

            # An OAuth token issued by one replica is accepted by the other.
            issued = one.post(
                "/auth/oauth/v1/token",
                json={"grant_type": "client_credentials", "client_id": "app", "client_secret": "secret"},
            )
            assert issued.status_code == 200, issued.text
            token = issued.json()["access_token"]
            answer = other.post(
                "/api/v1/persons/truncate",
                params={**TOKEN, "oauth_token": token},
                files={"meta": (None, '{"space":"5"}', "text/plain")},
            )
            assert answer.json() == {"status": 200, "body": {}, "htmlencoded": False, "last_modified": 0}
    # What the replicas stored is in the database itself, not in either container.
    persons = "SELECT string_agg(DISTINCT person_id::text, ',') FROM faces WHERE space = 4"
    assert postgres.psql(persons, database.rsplit("/", 1)[1]) == "7,8,9"
