"""``neurostream models ...`` and ``services ...``: the registry from the command line.

Every command goes through the queue manager's HTTP API (``launcher.registry_client``)
with the bearer token, so the same commands work against a remote deployment
(``--url``/``NEUROSTREAM_QM_URL``, ``--token``/``NEUROSTREAM_API_TOKEN``). ``push`` uploads
a model a person trained elsewhere, with the signature it was trained on (a JSON file or
flags); ``import-mlflow`` does the same for a model MLflow tracks, reading its artifact
without unpickling anything (``launcher.mlflow_import``); ``export-onnx`` downloads a
``torch-eegnet`` version, exports it with ``neurostream.models.export`` and registers the
``onnx`` twin (or writes the file), so a network trained here can serve from onnxruntime
or leave for another runtime. The server loads each upload as
a worker would before storing it, so a broken artifact is refused with its reason (422)
and shown as the ``error:`` line. ``services input`` declares what a service's producer
streams, so an assignment its input cannot meet is refused (409) before a worker sees a
window. What each command prints is a short story: what was registered or moved, and
what to run next.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from neurostream.errors import ConfigError

if TYPE_CHECKING:
    from launcher.registry_client import RegistryClient
    from neurostream.models.training import TrainedModel
    from queue_manager.schemas import VersionOut

models_app = typer.Typer(
    help="The model registry over the queue manager's API: push, list, alias, assign, "
    "import-mlflow, export-onnx.",
    no_args_is_help=True,
)

services_app = typer.Typer(
    help="Services over the queue manager's API: declare the input a service streams.",
    no_args_is_help=True,
)

HEADLINE = ("roc_auc", "balanced_accuracy", "accuracy")  # shown by `models list --name`
EXPORT_CHECK_ROWS = 64  # random epochs on which `export-onnx` reports |p_torch - p_onnx|

# --- options shared by the commands -------------------------------------------------------

Url = Annotated[
    str | None,
    typer.Option(help="Queue manager API (default NEUROSTREAM_QM_URL, http://127.0.0.1:8000)."),
]
Token = Annotated[
    str | None,
    typer.Option(
        help="Bearer token for writes (default NEUROSTREAM_API_TOKEN).", show_default=False
    ),
]
Name = Annotated[str, typer.Option("--name", help="Registry name of the model.")]
Pipeline = Annotated[
    str,
    typer.Option(
        "--pipeline",
        help="Feature pipeline the model reads: raw@1 (epochs as cut), erp@1, erp@2, bandpower@1.",
    ),
]
SignatureFile = Annotated[
    Path | None,
    typer.Option(
        "--signature",
        help="JSON input_spec (fs, n_channels, n_samples, channels, tmin, tmax, units, ...); "
        "the flags below override its keys.",
    ),
]
Fs = Annotated[float | None, typer.Option("--fs", help="Sampling rate the model expects, Hz.")]
Channels = Annotated[
    str | None,
    typer.Option("--channels", help="Channel names in the model's order: TP9,AF7,AF8,TP10."),
]
NChannels = Annotated[
    int | None, typer.Option("--n-channels", help="Channel count (default: len(--channels)).")
]
NSamples = Annotated[int | None, typer.Option("--n-samples", help="Samples per window.")]
Tmin = Annotated[float | None, typer.Option("--tmin", help="Epoch start around the event, s.")]
Tmax = Annotated[float | None, typer.Option("--tmax", help="Epoch end around the event, s.")]
Baseline = Annotated[
    str | None, typer.Option("--baseline", help="Epoch baseline START,END in s, or none.")
]
Filtered = Annotated[
    str | None,
    typer.Option("--filtered", help="Stream filter the epochs were cut after, e.g. 1-30@4."),
]
Units = Annotated[str | None, typer.Option("--units", help="Units of the input: V, mV, uV, nV.")]
Kind = Annotated[str | None, typer.Option("--kind", help="Window kind: epoch (default).")]
FeatureParams = Annotated[
    str | None, typer.Option("--feature-params", help="Pipeline parameters as a JSON object.")
]
ModelParams = Annotated[
    str | None, typer.Option("--model-params", help="Family parameters as a JSON object.")
]
ClassMap = Annotated[
    str | None,
    typer.Option(
        "--class-map",
        help="The artifact's class labels to neurostream labels: Target=1,NonTarget=0 "
        "(stored as model_params.class_map).",
    ),
]
Classes = Annotated[
    str | None,
    typer.Option("--classes", help="Labels the model predicts, e.g. 0,1 (default: the map's)."),
]
Metrics = Annotated[
    Path | None, typer.Option("--metrics", help="JSON object of scores stored with the version.")
]
AliasOpt = Annotated[
    str | None, typer.Option("--alias", help="Point this alias at the new version.")
]
AssignOpt = Annotated[
    str | None,
    typer.Option(
        "--assign",
        help="Make this service serve the new version (via --alias when given); created if "
        "missing.",
    ),
]


@dataclass(frozen=True)
class SignatureFlags:
    """The signature options as given (None: not given)."""

    file: Path | None = None
    fs: float | None = None
    channels: str | None = None
    n_channels: int | None = None
    n_samples: int | None = None
    tmin: float | None = None
    tmax: float | None = None
    baseline: str | None = None
    filtered: str | None = None
    units: str | None = None
    kind: str | None = None


@dataclass(frozen=True)
class Extras:
    """What ``push`` and ``import-mlflow`` both take beside the artifact."""

    feature_params: str | None = None
    model_params: str | None = None
    class_map: str | None = None
    classes: str | None = None
    metrics: Path | None = None
    alias: str | None = None
    assign: str | None = None


# --- parsing ------------------------------------------------------------------------------


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} is not JSON: {exc}", field=what) from None
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a JSON object, got {text[:80]!r}", field=what)
    return value


def _json_file(path: Path, what: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}", field=what) from None
    return _json_object(text, f"{what} {path}")


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _baseline(text: str) -> list[float] | None:
    if text.strip().lower() == "none":
        return None
    try:
        start, end = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(
            f"--baseline takes START,END in seconds or none, got {text!r}", field="--baseline"
        ) from None
    return [start, end]


def input_spec(flags: SignatureFlags) -> dict[str, Any]:
    """The ``input_spec`` the flags describe (the server checks it; this only assembles)."""
    spec: dict[str, Any] = _json_file(flags.file, "--signature") if flags.file else {}
    if flags.channels is not None:
        spec["channels"] = _names(flags.channels)
        spec.setdefault("n_channels", len(spec["channels"]))
    given = {
        "fs": flags.fs,
        "n_channels": flags.n_channels,
        "n_samples": flags.n_samples,
        "tmin": flags.tmin,
        "tmax": flags.tmax,
        "filtered": flags.filtered,
        "units": flags.units,
        "kind": flags.kind,
    }
    spec |= {k: v for k, v in given.items() if v is not None}
    if flags.baseline is not None:
        spec["baseline"] = _baseline(flags.baseline)
    missing = [k for k in ("fs", "n_channels", "n_samples") if spec.get(k) is None]
    if missing:
        flag = {"fs": "--fs", "n_channels": "--channels", "n_samples": "--n-samples"}
        raise ConfigError(
            f"the signature lacks {', '.join(missing)}: a worker matches windows to it",
            field="input_spec",
            hint=f"give {' '.join(flag[k] for k in missing)}, or --signature FILE with those keys",
        )
    spec.setdefault("kind", "epoch")
    return spec


def _class_map(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for pair in _names(text):
        key, sep, value = pair.rpartition("=")
        try:
            out[key.strip()] = int(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise ConfigError(
                f"--class-map takes ARTIFACT_CLASS=LABEL pairs, e.g. Target=1,NonTarget=0; "
                f"got {pair!r}",
                field="--class-map",
            )
    return out


def metadata(family: str, pipeline: str, spec: dict[str, Any], extras: Extras) -> dict[str, Any]:
    """The ``metadata`` form field of an upload."""
    model_params = (
        _json_object(extras.model_params, "--model-params") if extras.model_params else {}
    )
    meta: dict[str, Any] = {
        "family": family,
        "feature_pipeline": pipeline,
        "input_spec": spec,
        "feature_params": (
            _json_object(extras.feature_params, "--feature-params") if extras.feature_params else {}
        ),
    }
    labels: list[int] | None = None
    if extras.class_map:
        cmap = _class_map(extras.class_map)
        model_params["class_map"] = cmap
        labels = sorted(set(cmap.values()))
    if extras.classes:
        try:
            labels = [int(c) for c in _names(extras.classes)]
        except ValueError:
            raise ConfigError(
                f"--classes takes integer labels, e.g. 0,1; got {extras.classes!r}",
                field="--classes",
            ) from None
    if labels is not None:
        meta["classes"] = labels
    meta["model_params"] = model_params
    if extras.metrics:
        meta["metrics"] = _json_file(extras.metrics, "--metrics")
    return meta


# --- output -------------------------------------------------------------------------------


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    return f"{n / 1000:.1f} kB" if n < 1_000_000 else f"{n / 1_000_000:.1f} MB"


def signature_line(spec: dict[str, Any]) -> str:
    """``4 ch (TP9, AF7, AF8, TP10) x 205 samples at 256 Hz, -0.10..+0.70 s, uV``."""
    if not spec:
        return "no signature"
    names = spec.get("channels")
    shown = f" ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})" if names else ""
    out = f"{spec.get('n_channels')} ch{shown} x {spec.get('n_samples')} samples"
    fs = spec.get("fs")
    out += f" at {fs:g} Hz" if isinstance(fs, int | float) else ""
    tmin, tmax = spec.get("tmin"), spec.get("tmax")
    if isinstance(tmin, int | float) and isinstance(tmax, int | float):
        out += f", {tmin:+.2f}..{tmax:+.2f} s"
    if spec.get("filtered"):
        out += f", filtered {spec['filtered']}"
    return out + f", {spec.get('units', 'uV')}"


def headline(metrics: dict[str, Any]) -> str:
    """The version's main scores: cross-validated ones when recorded, else the top level."""
    cv = metrics.get("cv")
    source, label = (cv, "cv ") if isinstance(cv, dict) else (metrics, "")
    parts = [
        f"{label}{k} {source[k]:.3f}"
        for k in HEADLINE
        if isinstance(source.get(k), int | float) and not isinstance(source.get(k), bool)
    ]
    return "  ".join(parts) or "no metrics"


def _client(url: str | None, token: str | None) -> RegistryClient:
    from launcher.registry_client import ClientSettings, RegistryClient
    from neurostream.settings import CoreSettings

    return RegistryClient.from_settings(CoreSettings(), ClientSettings(), url=url, token=token)


def _upload(
    client: RegistryClient, name: str, artifact: bytes, meta: dict[str, Any], extras: Extras
) -> None:
    """Push, then move the alias and assign as asked; tell the story."""
    v = client.push(name, artifact, meta)
    typer.echo(
        f"registered {v.model_name} v{v.version} (version id {v.id}): {v.family} on "
        f"{v.feature_pipeline}, {_size(v.artifact_size)}, sha256 {v.sha256}"
    )
    typer.echo(f"  signature: {signature_line(v.input_spec)}")
    ref = str(v.version)
    if extras.alias:
        moved = client.set_alias(name, extras.alias, v.version)
        ref = extras.alias
        told = ", ".join(moved.services_notified)
        typer.echo(
            f"  alias {extras.alias} -> v{v.version}"
            + (f" (services following it told: {told})" if told else "")
        )
    if extras.assign:
        _assign_story(client, extras.assign, name, ref, None)
        typer.echo(f"next: stream to it with `neurostream produce --service {extras.assign}`")
    elif extras.alias:
        typer.echo(f"next: neurostream models assign SERVICE {extras.alias} --model {name}")
    else:
        typer.echo(
            f"next: neurostream models alias {name} champion {v.version}, then "
            f"neurostream models assign SERVICE champion --model {name}"
        )


def _assign_story(
    client: RegistryClient, service: str, model: str, ref: str, shadow: str | None
) -> None:
    _, created = client.ensure_service(service)
    out = client.assign(service, model, ref, shadow)
    shadow_text = (
        f", shadow {model}:{shadow} (version id {out.shadow_version_id})" if shadow else ""
    )
    typer.echo(
        f"  service {service}{' (created)' if created else ''} now serves {model}:{ref} "
        f"(version id {out.serving_version_id}){shadow_text}"
    )
    if not out.event_published:
        typer.echo(
            "  ! the models.events publish failed; workers pick the change up at their next "
            "heartbeat check"
        )


# --- commands -----------------------------------------------------------------------------


@models_app.command("push")
def push(
    file: Annotated[Path, typer.Argument(help="The artifact: a .skops file, an .onnx file, ...")],
    name: Name,
    family: Annotated[
        str,
        typer.Option(
            "--family", help="sklearn-pipeline (skops) | onnx | sklearn-lda | torch-eegnet"
        ),
    ],
    pipeline: Pipeline,
    signature: SignatureFile = None,
    fs: Fs = None,
    channels: Channels = None,
    n_channels: NChannels = None,
    n_samples: NSamples = None,
    tmin: Tmin = None,
    tmax: Tmax = None,
    baseline: Baseline = None,
    filtered: Filtered = None,
    units: Units = None,
    kind: Kind = None,
    feature_params: FeatureParams = None,
    model_params: ModelParams = None,
    class_map: ClassMap = None,
    classes: Classes = None,
    metrics: Metrics = None,
    alias: AliasOpt = None,
    assign: AssignOpt = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Register a model trained elsewhere as the next version of --name.

    The queue manager loads it exactly as a worker would (safe deserialisation, the
    feature pipeline, a warm-up prediction on the signature's shape) and refuses what
    would not serve. The signature is what windows are matched against: channel names
    in the model's order, fs, window length, epoch geometry, units.
    """
    spec = input_spec(
        SignatureFlags(
            signature,
            fs,
            channels,
            n_channels,
            n_samples,
            tmin,
            tmax,
            baseline,
            filtered,
            units,
            kind,
        )
    )
    extras = Extras(feature_params, model_params, class_map, classes, metrics, alias, assign)
    meta = metadata(family, pipeline, spec, extras)
    try:
        artifact = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}", field="FILE") from None
    with _client(url, token) as client:
        _upload(client, name, artifact, meta, extras)


@models_app.command("import-mlflow")
def import_mlflow(
    source: Annotated[
        str,
        typer.Argument(
            help="An MLflow model folder (with an MLmodel file), or models:/NAME/VERSION, "
            "runs:/RUN_ID/PATH (needs the mlflow extra)."
        ),
    ],
    name: Name,
    pipeline: Pipeline,
    signature: SignatureFile = None,
    fs: Fs = None,
    channels: Channels = None,
    n_channels: NChannels = None,
    n_samples: NSamples = None,
    tmin: Tmin = None,
    tmax: Tmax = None,
    baseline: Baseline = None,
    filtered: Filtered = None,
    units: Units = None,
    kind: Kind = None,
    feature_params: FeatureParams = None,
    model_params: ModelParams = None,
    class_map: ClassMap = None,
    classes: Classes = None,
    metrics: Metrics = None,
    alias: AliasOpt = None,
    assign: AssignOpt = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="MLflow tracking server for models:/ and runs:/ (default MLflow's)."),
    ] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Register an MLflow model: scikit-learn saved as skops, or ONNX.

    The MLmodel file says which: an sklearn flavor saved with skops becomes family
    sklearn-pipeline, an onnx flavor family onnx. A pickled model (sklearn with pickle or
    cloudpickle, pyfunc, pytorch, ...) is refused, since unpickling runs its code; the
    error says how to re-log it. MLflow's tensor spec has no channel names, so the
    neurostream signature comes from --signature or the flags, as for `models push`.
    """
    import tempfile

    from launcher.mlflow_import import import_source

    spec = input_spec(
        SignatureFlags(
            signature,
            fs,
            channels,
            n_channels,
            n_samples,
            tmin,
            tmax,
            baseline,
            filtered,
            units,
            kind,
        )
    )
    extras = Extras(feature_params, model_params, class_map, classes, metrics, alias, assign)
    with tempfile.TemporaryDirectory(prefix="neurostream-mlflow-") as scratch:
        model = import_source(source, Path(scratch), tracking_uri=tracking_uri)
    meta = metadata(model.family, pipeline, spec, extras)
    meta["metrics"] = {**meta.get("metrics", {}), "lineage": model.lineage()}
    typer.echo(
        f"MLflow model {source}: {model.flavor} flavor ({model.artifact_file}, "
        f"{_size(len(model.artifact))}) -> family {model.family}"
        + (f"; MLflow input {model.input_schema}" if model.input_schema else "")
    )
    if model.trusted_types:
        typer.echo(f"  skops types it was logged to trust: {', '.join(model.trusted_types)}")
    with _client(url, token) as client:
        _upload(client, name, model.artifact, meta, extras)


@models_app.command("export-onnx")
def export_onnx(
    name: Annotated[str, typer.Argument(help="Model whose torch-eegnet version to export.")],
    version: Annotated[int, typer.Argument(help="Its version number.")],
    push_name: Annotated[
        str | None,
        typer.Option(
            "--push",
            metavar="NEW_NAME",
            help="Register the export as the next version of this model (default: NAME).",
        ),
    ] = None,
    alias: AliasOpt = None,
    assign: AssignOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="FILE.onnx",
            help="Write the ONNX file, and signature.json beside it, instead of registering.",
        ),
    ] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Export a torch-eegnet version to ONNX and register it (family onnx) or write it.

    The version is downloaded over the API (its sha256 checked), loaded weights-only as a
    worker would, exported with a dynamic batch axis, and refused if onnxruntime's
    probabilities differ from torch's. The onnx version keeps the feature pipeline,
    signature, classes and metrics, so it can replace the torch one behind an alias.
    Needs the onnx-export extra (onnx and onnxscript); serving needs only onnxruntime.
    """
    if out is not None and (push_name or alias or assign):
        raise ConfigError(
            "--out writes a file; --push, --alias and --assign register a version",
            field="--out",
            hint="give --out alone, or leave it out to register the export",
        )
    from neurostream.models.families import TORCH_EEGNET  # imports scikit-learn: lazily

    with _client(url, token) as client:
        source = client.get_version(name, version)
        if source.family != TORCH_EEGNET:
            raise ConfigError(
                f"{name} v{version} is family {source.family}; only {TORCH_EEGNET} versions "
                "export to ONNX",
                field="family",
                hint="export other models with their own tools (skl2onnx, tf2onnx) and "
                "register the file with `neurostream models push FILE --family onnx`",
            )
        artifact = client.download_artifact(name, version)
        torch_version, onnx = _exported(source, artifact)
        typer.echo(
            f"exported {name} v{version} ({TORCH_EEGNET} on {source.feature_pipeline}, "
            f"{_size(len(artifact))}) to ONNX: {_size(len(onnx.artifact))}, max "
            f"|p_torch - p_onnx| {_max_difference(torch_version, onnx):.1e} on "
            f"{EXPORT_CHECK_ROWS} random epochs"
        )
        meta: dict[str, Any] = {
            "family": onnx.family,
            "feature_pipeline": onnx.feature_pipeline,
            "feature_params": onnx.feature_params,
            "model_params": onnx.model_params,
            "input_spec": onnx.input_spec,
            "classes": onnx.classes,
            "metrics": onnx.metrics,
            "dataset_hash": source.dataset_hash,
            "code_version": source.code_version,
            "sha256": onnx.sha256,
        }
        if out is None:
            _upload(
                client, push_name or name, onnx.artifact, meta, Extras(alias=alias, assign=assign)
            )
            return
    _write_export(out, onnx.artifact, meta)


def _exported(source: VersionOut, artifact: bytes) -> tuple[TrainedModel, TrainedModel]:
    """The downloaded torch version, loaded safely, and its ONNX twin (checked by the core)."""
    from neurostream.models import artifacts, export
    from neurostream.models.training import TrainedModel

    torch_version = TrainedModel(
        family=source.family,
        feature_pipeline=source.feature_pipeline,
        feature_params=source.feature_params,
        model_params=source.model_params,
        input_spec=source.input_spec,
        classes=source.classes,
        artifact=artifact,
        sha256=source.sha256,
        metrics=source.metrics,
        dataset_hash=source.dataset_hash or "",
        classifier=artifacts.load(
            artifact,
            source.family,
            sha256=source.sha256,
            model_params=source.model_params,
            classes=source.classes,
        ),
    )
    return torch_version, export.onnx_version(torch_version)


def _max_difference(torch_version: TrainedModel, onnx: TrainedModel) -> float:
    """Largest probability gap on random epochs, as the export's own check measures it
    (other epochs than the check's: seed 1)."""
    from neurostream.models.eegnet import TorchClassifier
    from neurostream.models.export import probability_gap

    net = torch_version.classifier
    assert isinstance(net, TorchClassifier)  # what artifacts.load gives for torch-eegnet
    return probability_gap(net, onnx.classifier, rows=EXPORT_CHECK_ROWS, seed=1)


def _write_export(out: Path, data: bytes, meta: dict[str, Any]) -> None:
    """The .onnx file and signature.json beside it, and the push that registers them."""
    signature = out.parent / "signature.json"
    try:
        out.write_bytes(data)
        signature.write_text(json.dumps(meta["input_spec"], indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {exc.filename}: {exc.strerror}", field="--out") from None
    typer.echo(f"wrote {out} ({_size(len(data))}, sha256 {meta['sha256']}) and {signature}")
    command = [
        *("neurostream", "models", "push", str(out), "--name", "NAME", "--family", "onnx"),
        *("--pipeline", meta["feature_pipeline"], "--signature", str(signature)),
        *("--feature-params", json.dumps(meta["feature_params"])),
        *("--model-params", json.dumps(meta["model_params"])),
        *("--classes", ",".join(str(c) for c in meta["classes"])),
    ]
    typer.echo(f"next: {shlex.join(command)}")


@models_app.command("list")
def list_models(
    name: Annotated[
        str | None, typer.Option("--name", help="List this model's versions in detail.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """The registered models (versions, latest, aliases), or one model's versions."""
    with _client(url, token) as client:
        if name is None:
            models = client.list_models()
            if as_json:
                typer.echo(json.dumps([m.model_dump(mode="json") for m in models], indent=2))
                return
            if not models:
                typer.echo("no models registered; add one with `neurostream models push`")
                return
            width = max(len(m.name) for m in models)
            typer.echo(f"{'MODEL':<{width}}  {'FAMILY':<18}  VERSIONS  LATEST  ALIASES")
            for m in models:
                aliases = " ".join(f"{a}=v{v}" for a, v in sorted(m.aliases.items())) or "-"
                latest = f"v{m.latest}" if m.latest is not None else "-"
                typer.echo(
                    f"{m.name:<{width}}  {m.family:<18}  {m.versions:<8}  {latest:<6}  {aliases}"
                )
            return
        model = client.get_model(name)
        versions = client.list_versions(name)
    if as_json:
        typer.echo(json.dumps([v.model_dump(mode="json") for v in versions], indent=2))
        return
    _versions_story(model.name, model.aliases, versions)


def _versions_story(name: str, aliases: dict[str, int], versions: list[VersionOut]) -> None:
    by_version: dict[int, list[str]] = {}
    for tag, number in sorted(aliases.items()):
        by_version.setdefault(number, []).append(tag)
    typer.echo(f"{name}: {len(versions)} version(s)")
    for v in versions:
        tags = f" [{', '.join(by_version[v.version])}]" if v.version in by_version else ""
        typer.echo(
            f"  v{v.version}{tags}  {v.family} on {v.feature_pipeline}  "
            f"{v.created_at:%Y-%m-%d %H:%M}  {_size(v.artifact_size)}  sha256 {v.sha256[:12]}"
        )
        typer.echo(f"      signature: {signature_line(v.input_spec)}")
        typer.echo(f"      metrics: {headline(v.metrics)}")


@models_app.command("alias")
def alias(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="e.g. champion.")],
    version: Annotated[int, typer.Argument(help="Version number it points at.")],
    url: Url = None,
    token: Token = None,
) -> None:
    """Point an alias at a version; the services following it swap models."""
    with _client(url, token) as client:
        out = client.set_alias(name, alias_name, version)
    told = ", ".join(out.services_notified)
    typer.echo(
        f"{name}: {alias_name} -> v{out.version} (version id {out.version_id})"
        + (f"; services following it told: {told}" if told else "; no service follows it yet")
    )
    if out.services_notified and not out.event_published:
        typer.echo(
            "  ! the models.events publish failed; workers pick the change up at their next "
            "heartbeat check"
        )
    if not told:
        typer.echo(f"next: neurostream models assign SERVICE {alias_name} --model {name}")


@models_app.command("assign")
def assign(
    service: Annotated[str, typer.Argument(help="Service (created if missing).")],
    ref: Annotated[str, typer.Argument(help="Version number or alias, e.g. champion.")],
    model: Annotated[str, typer.Option("--model", help="Model name.")],
    shadow: Annotated[
        str | None, typer.Option("--shadow", help="A second ref run in shadow beside it.")
    ] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Make a service serve a model at a version or alias (workers swap on the event)."""
    with _client(url, token) as client:
        _assign_story(client, service, model, ref, shadow)


@services_app.command("input")
def service_input(
    service: Annotated[str, typer.Argument(help="Service (created if missing).")],
    channels: Annotated[
        str | None, typer.Option(help="Channel names the producer streams: TP9,AF7,AF8,TP10.")
    ] = None,
    fs: Annotated[float | None, typer.Option(help="Sampling rate, Hz.")] = None,
    n_samples: Annotated[int | None, typer.Option(help="Samples per window.")] = None,
    kind: Annotated[str | None, typer.Option(help="epoch | sliding.")] = None,
    tmin: Tmin = None,
    tmax: Tmax = None,
    baseline: Baseline = None,
    stream_filter: Annotated[
        str | None,
        typer.Option(
            "--filter", help="The producer's causal stream filter: LOW-HIGH[@ORDER], e.g. 1-30."
        ),
    ] = None,
    no_filter: Annotated[
        bool, typer.Option("--no-filter", help="The stream is not filtered.")
    ] = False,
    clear: Annotated[
        bool, typer.Option("--clear", help="Forget the declared input (assign anything).")
    ] = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Declare what a service's producer streams (channels, fs, epoch geometry, filter).

    From then on an assignment or alias move that would give the service a version whose
    signature this input cannot meet is refused, with the mismatch named. Keys left out
    are unknown and never refuse anything.
    """
    declared: dict[str, Any] | None = None
    if not clear:
        if stream_filter and no_filter:
            raise ConfigError("--filter and --no-filter contradict each other", hint="pick one")
        declared = {
            "channels": _names(channels) if channels is not None else None,
            "fs": fs,
            "n_samples": n_samples,
            "kind": kind,
            "tmin": tmin,
            "tmax": tmax,
            "baseline": _baseline(baseline) if baseline is not None else None,
            "filtered": "none" if no_filter else _filter_label(stream_filter),
        }
        declared = {k: v for k, v in declared.items() if v is not None}
        if not declared:
            raise ConfigError(
                "nothing to declare",
                hint="give --channels, --fs, --tmin/--tmax, --filter, ... (or --clear)",
            )
    with _client(url, token) as client:
        out, created = client.set_service_input(service, declared)
    if out.input is None:
        typer.echo(f"service {service}: no declared input; any version may be assigned")
        return
    shown = out.input.model_dump(exclude_none=True)
    typer.echo(
        f"service {service}{' (created)' if created else ''} streams "
        + ", ".join(f"{k} {_shown(v)}" for k, v in shown.items())
    )
    if out.model_name:
        typer.echo(f"  it serves {out.model_name}:{out.model_ref}, which this input meets")


def _shown(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _filter_label(text: str | None) -> str | None:
    """``1-30`` -> ``1-30@4``: the label versions record as ``filtered``."""
    if text is None:
        return None
    from neurostream.streamfilter import FilterSpec

    return FilterSpec.parse(text).label
