"""Services declare their input; the queue manager refuses pairings that input cannot meet.

Against the real queue manager app (``api`` of ``test_queue_manager``: real PostgreSQL,
real RabbitMQ): a declared input is validated (422 on ``input.<key>``) and returned; an
assignment, an alias move or an input change that would pair a service with a version its
input cannot meet is a 409 whose message names the mismatch, and nothing is written.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from neurostream import registry
from neurostream.geometry import EpochGeometry
from neurostream.models.training import TrainedModel, train_model
from tests.factories import FS, synthetic_p300, unique
from tests.integration import test_queue_manager

pytestmark = pytest.mark.integration
api = test_queue_manager.api  # the session's queue manager app and client, shared
upload = test_queue_manager.upload
NAMES = ["Fz", "Cz", "Pz", "Oz"]
# What the models below were trained on: 4 named channels at 250 Hz, epochs -0.1..0.7 s.
FITS: dict[str, Any] = {"channels": NAMES, "fs": FS, "tmin": -0.1, "tmax": 0.7, "kind": "epoch"}


@pytest.fixture(scope="session")
def named() -> TrainedModel:
    """``erp@1`` on named channels and a recorded epoch geometry."""
    x, y = synthetic_p300(channels=4, seed=5)
    return train_model("sklearn-lda", x, y, FS, channels=NAMES, tmin=-0.1, tmax=0.7)


@pytest.fixture(scope="session")
def behind_filter() -> TrainedModel:
    """``erp@2``: trained on epochs cut from a stream filtered 1-30@4."""
    x, y = synthetic_p300(channels=4, seed=6)
    geometry = EpochGeometry.cut(-0.1, 0.7, "auto", "1-30@4")
    return train_model("sklearn-lda", x, y, FS, pipeline="erp@2", channels=NAMES, geometry=geometry)


@pytest.fixture(scope="session")
def unnamed() -> TrainedModel:
    """No channel names: matched to windows by count."""
    x, y = synthetic_p300(channels=4, seed=7)
    return train_model("sklearn-lda", x, y, FS)


async def _service(api: httpx.AsyncClient, service_input: dict[str, Any] | None) -> str:
    name = unique("svc")
    body: dict[str, Any] = {"name": name}
    if service_input is not None:
        body["input"] = service_input
    r = await api.post("/services", json=body)
    assert r.status_code == 201, r.text
    return name


async def _model(api: httpx.AsyncClient, trained: TrainedModel, versions: int = 1) -> str:
    name = unique("m")
    for _ in range(versions):
        r = await upload(api, name, trained)
        assert r.status_code == 201, r.text
    return name


async def test_a_declared_input_is_stored_normalised_and_kept(api: httpx.AsyncClient, pool):
    declared = {**FITS, "baseline": [-0.1, 0.0], "filtered": "1-30", "n_samples": 200}
    name = await _service(api, declared)
    r = await api.get(f"/services/{name}")
    assert r.status_code == 200
    # The filter label is written as the producer writes it; nothing else changes.
    assert r.json()["input"] == {**declared, "filtered": "1-30@4"}
    async with pool.connection() as conn:  # the column holds the declared keys only
        cur = await conn.execute("SELECT input FROM services WHERE name = %s", [name])
        assert (await cur.fetchone())[0] == {**declared, "filtered": "1-30@4"}
    async with pool.connection() as conn:
        stored = await registry.get_input(conn, name)
    assert (stored.channels, stored.fs, stored.n_samples) == (tuple(NAMES), 250.0, 200)

    r = await api.put(f"/services/{name}", json={"description": "only the description"})
    assert r.status_code == 200 and r.json()["input"]["channels"] == NAMES
    r = await api.put(f"/services/{name}", json={"input": {"fs": 256.0}})
    assert r.status_code == 200  # undeclared keys answer null
    assert r.json()["input"] == dict.fromkeys(declared) | {"fs": 256.0}
    r = await api.put(f"/services/{name}", json={"input": None})
    assert r.status_code == 200 and r.json()["input"] is None
    # A service created without an input answers null, as before inputs existed.
    assert (await api.get(f"/services/{await _service(api, None)}")).json()["input"] is None


@pytest.mark.parametrize(
    ("declared", "field", "words"),
    [
        ({"channels": ["Fz", "Cz", "Fz"]}, "input.channels", "Fz more than once"),
        ({"channels": ["Fz", " "]}, "input.channels", "empty names"),
        ({"channels": []}, "input.channels", "at least 1"),
        ({"fs": 0}, "input.fs", "greater than 0"),
        ({"fs": "fast"}, "input.fs", "valid number"),
        ({"n_samples": 0}, "input.n_samples", "greater than or equal to 1"),
        ({"tmin": 0.5, "tmax": 0.1}, "input.tmax", "must be before tmax"),
        ({**FITS, "n_samples": 205}, "input.n_samples", "disagrees with tmin..tmax"),
        ({"baseline": [0.0, -0.1]}, "input.baseline", "start < end"),
        ({"filtered": "lowpass please"}, "input.filtered", "cannot read the stream filter"),
        ({"kind": "continuous"}, "input.kind", "'epoch' or 'sliding'"),
        ({"montage": "10-20"}, "input.montage", "Extra inputs are not permitted"),
    ],
)
async def test_a_bad_input_is_422_naming_the_key(
    api: httpx.AsyncClient, declared: dict[str, Any], field: str, words: str
) -> None:
    name = unique("svc")
    r = await api.post("/services", json={"name": name, "input": declared})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == field and words in r.json()["detail"], r.json()
    assert (await api.get(f"/services/{name}")).status_code == 404
    r = await api.put(f"/services/{name}", json={"input": declared})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == field
    assert (await api.get(f"/services/{name}")).status_code == 404


@pytest.mark.parametrize(
    ("model", "declared", "words"),
    [
        (
            "named",
            {"channels": ["TP9", "AF7", "AF8", "TP10", "Cz"]},
            "streams TP9, AF7, AF8, TP10, Cz; model {label} needs Fz, Pz, Oz",
        ),
        ("named", {"fs": 256.0}, "streams at 256 Hz; model {label} was trained at 250 Hz"),
        ("named", {"n_samples": 205}, "sends windows of 205 samples; model {label} needs 200"),
        (
            "named",
            {"tmin": -0.1, "tmax": 0.8},
            "sends windows of 225 samples (-0.1..0.8 s); model {label} needs 200",
        ),
        (
            "named",
            {"tmin": 0.0, "tmax": 0.8},
            "cuts epochs from +0 s around the event; model {label} was trained on epochs "
            "from -0.1 s",
        ),
        ("named", {"kind": "sliding"}, "sends sliding windows; model {label} was trained on"),
        (
            "behind_filter",
            {**FITS, "filtered": "none"},
            "declares its stream unfiltered; model {label}: erp@2 expects epochs cut from a "
            "stream filtered 1-30@4",
        ),
        (
            "behind_filter",
            {**FITS, "filtered": "1-40@4"},
            "declares its stream 1-40@4; model {label}: erp@2 expects epochs cut from a "
            "stream filtered 1-30@4, this window came filtered 1-40@4",
        ),
        (
            "unnamed",
            {"channels": ["Fz", "Cz", "Pz"]},
            "streams 3 channels; model {label} needs 4 (it records no names",
        ),
    ],
)
async def test_an_assignment_the_input_cannot_meet_is_409_with_the_mismatch_named(
    api: httpx.AsyncClient, pool, request, model: str, declared: dict[str, Any], words: str
) -> None:
    trained = request.getfixturevalue(model)
    model_name = await _model(api, trained)
    service = await _service(api, declared)
    r = await api.put(f"/services/{service}/assign", json={"model_name": model_name, "ref": "1"})
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert detail.startswith(f"ref: {model_name!r} at '1' does not meet the input"), detail
    assert f"service {service!r} " + words.format(label=f"{model_name}:1") in detail, detail
    assert r.json()["errors"][0] == {
        "field": "ref",
        "message": detail.removeprefix("ref: "),
        "type": "incompatible",
    }
    async with pool.connection() as conn:
        row = await registry.get_service(conn, service)
    assert row is not None and (row["model_name"], row["model_ref"]) == (None, None)


@pytest.mark.parametrize(
    ("model", "declared"),
    [
        ("named", FITS),
        ("named", {**FITS, "channels": ["AUX", "Oz", "Pz", "Cz", "Fz"], "n_samples": 200}),
        ("named", {"fs": 250.0}),  # undeclared keys are unknown, and unknown is allowed
        ("named", None),  # no input at all: the behaviour before inputs were declared
        ("behind_filter", {**FITS, "filtered": "1-30@4"}),
        ("behind_filter", FITS),  # the filter undeclared: not refused on it
        ("unnamed", {"channels": ["A", "B", "C", "D"], "fs": 250.0}),
    ],
)
async def test_an_input_that_meets_the_signature_is_assigned(
    api: httpx.AsyncClient, request, model: str, declared: dict[str, Any] | None
) -> None:
    model_name = await _model(api, request.getfixturevalue(model))
    service = await _service(api, declared)
    r = await api.put(f"/services/{service}/assign", json={"model_name": model_name, "ref": "1"})
    assert r.status_code == 200, r.text
    assert (r.json()["model_name"], r.json()["serving_version_id"] is not None) == (
        model_name,
        True,
    )


async def test_the_shadow_ref_is_checked_too(
    api: httpx.AsyncClient, pool, named, behind_filter
) -> None:
    # One model name, two versions: v1 erp@1 (fits), v2 erp@2 behind 1-30@4 (does not).
    model_name = unique("m")
    assert (await upload(api, model_name, named)).status_code == 201
    assert (await upload(api, model_name, behind_filter)).status_code == 201
    service = await _service(api, {**FITS, "filtered": "none"})
    body = {"model_name": model_name, "ref": "1", "shadow_ref": "2"}
    r = await api.put(f"/services/{service}/assign", json=body)
    assert r.status_code == 409, r.text
    assert r.json()["errors"][0]["field"] == "shadow_ref"
    assert f"model {model_name}:2: erp@2 expects epochs cut from" in r.json()["detail"]
    async with pool.connection() as conn:
        assert (await registry.resolve_service(conn, service)).serving is None
    r = await api.put(f"/services/{service}/assign", json={**body, "shadow_ref": None})
    assert r.status_code == 200 and r.json()["shadow_ref"] is None


async def test_an_alias_move_a_follower_cannot_serve_is_409_and_the_alias_stays(
    api: httpx.AsyncClient, pool, named, behind_filter
) -> None:
    model_name = unique("m")
    v1 = (await upload(api, model_name, named)).json()
    v2 = (await upload(api, model_name, behind_filter)).json()
    champion = f"/models/{model_name}/aliases/champion"
    assert (await api.put(champion, json={"version": 1})).status_code == 200
    follower = await _service(api, {**FITS, "filtered": "none"})
    bystander = await _service(api, {**FITS, "filtered": "none"})  # serves version 1 itself
    for service, ref in ((follower, "champion"), (bystander, "1")):
        r = await api.put(
            f"/services/{service}/assign", json={"model_name": model_name, "ref": ref}
        )
        assert r.status_code == 200, r.text

    r = await api.put(champion, json={"version": 2})
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert detail.startswith("version: alias 'champion' cannot move to version 2"), detail
    assert f"service {follower!r} declares its stream unfiltered; model {model_name}:2" in detail
    assert bystander not in detail
    async with pool.connection() as conn:
        alias = await registry.get_alias(conn, model_name, "champion")
        assert alias is not None and alias["version_id"] == v1["id"]
        assert (await registry.resolve_service(conn, follower)).serving == v1["id"]

    # An alias no declared input follows moves as before, and so does champion once the
    # follower declares the filter version 2 needs.
    assert (await api.put(f"/models/{model_name}/aliases/next", json={"version": 2})).is_success
    r = await api.put(f"/services/{follower}", json={"input": {**FITS, "filtered": "1-30@4"}})
    assert r.status_code == 200, r.text  # version 1 (erp@1) takes epochs of any stream
    r = await api.put(champion, json={"version": 2})
    assert r.status_code == 200, r.text
    assert r.json()["services_notified"] == [follower]
    async with pool.connection() as conn:
        assert (await registry.resolve_service(conn, follower)).serving == v2["id"]


async def test_an_input_change_an_assigned_version_cannot_meet_is_409(
    api: httpx.AsyncClient, pool, named
) -> None:
    model_name = await _model(api, named)
    service = await _service(api, FITS)
    r = await api.put(f"/services/{service}/assign", json={"model_name": model_name, "ref": "1"})
    assert r.status_code == 200
    lacking = {**FITS, "channels": ["Fz", "Pz"]}
    r = await api.put(f"/services/{service}", json={"description": "new", "input": lacking})
    assert r.status_code == 409, r.text
    assert r.json()["errors"][0]["field"] == "input"
    assert (
        f"service {service!r} streams Fz, Pz; model {model_name}:1 needs Cz, Oz"
        in (r.json()["detail"])
    )
    got = (await api.get(f"/services/{service}")).json()
    assert (got["input"]["channels"], got["description"]) == (NAMES, "")  # nothing written
    r = await api.put(f"/services/{service}", json={"input": {**FITS, "channels": NAMES + ["X"]}})
    assert r.status_code == 200 and r.json()["input"]["channels"] == NAMES + ["X"]


async def test_registry_assign_refuses_for_every_caller(pool, named) -> None:
    """The check is in the registry, so the launcher and the CLIs get it too."""
    async with pool.connection() as conn:
        await registry.create_service(conn, svc := unique("svc"), service_input={"fs": 512.0})
        row = await registry.register_trained(conn, model := unique("m"), named)
        with pytest.raises(registry.Incompatible) as refused:
            await registry.assign(conn, svc, model, str(row["version"]))
        assert refused.value.status == 409 and refused.value.field == "ref"
        assert f"service {svc!r} streams at 512 Hz; model {model}:1 was trained at 250 Hz" in (
            refused.value.message
        )
        assert (await registry.resolve_service(conn, svc)).serving is None
