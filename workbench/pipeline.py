"""Run the workbench notebooks with papermill into ``reports/<run-id>/``, with caching and resume.

Each notebook is one step. Its executed copy (``<name>.ipynb``) and HTML rendering (``<name>.html``)
land in the run folder, and ``steps/<name>.json`` records that it finished. A re-run of the same
config skips finished steps, resumes from a failed one, and re-runs everything after a step that
had to run (its outputs may have changed). ``status.json`` says whether the run is running,
failed (and where) or complete.

A run folder is locked while a run uses it (:func:`~workbench.runlock.run_lock`): a second
process on the same config is refused (or waits). Before steps re-run, what they produced last
time (executed notebooks, their HTML, recorded outputs, ``results.csv``) is removed, so a page
built mid-run or after a failure never shows another run's numbers as current. A cached step's
recorded outputs are re-hashed: a file changed or truncated since its step finished re-runs it
(the records and these rules: :mod:`workbench.stepcache`).

Every notebook receives two parameters and must declare them in its ``parameters`` cell:
``config`` (the :class:`~workbench.config.RunConfig` as a dict; rebuild it with
``RunConfig.from_params({"config": config})``) and ``run_dir`` (the run folder, absolute).

Example:
    >>> from workbench.config import RunConfig
    >>> result = run_pipeline(RunConfig(), sorted(Path("notebooks").glob("0[1-5]_*.ipynb")),
    ...                       "reports", tag="baseline")  # doctest: +SKIP
    >>> result.run_dir  # doctest: +SKIP
    PosixPath('reports/baseline-3f2a9c1d0e4b')
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from workbench.config import RunConfig
from workbench.errors import WorkbenchError
from workbench.fileio import write_json, write_text
from workbench.plan import RunPlan, make_plan
from workbench.provenance import Provenance
from workbench.runlock import Interrupted, pending_interrupt, raise_if_interrupted, run_lock, stop_children
from workbench.stepcache import (
    STEPS_DIR,
    expected_record,
    invalidate,
    is_cached,
    latest_checksums,
    read_record,
    snapshot,
    write_record,
)

STATUS_JSON = "status.json"
CONFIG_YAML = "config.yaml"
PROVENANCE_JSON = "provenance.json"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_BOOKKEEPING = {STATUS_JSON, "index.html"}  # the run's own files: no step's output

ParamsFor = Callable[[str], Mapping[str, Any]]
StepContext = Callable[[str], AbstractContextManager]  # entered around each executed notebook


@dataclass
class StepResult:
    """One notebook of a run: executed now (``ran``) or skipped because already done (``cached``)."""

    name: str
    status: str
    seconds: float
    notebook: Path
    html: Path
    outputs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.status not in ("ran", "cached"):
            raise WorkbenchError(f"step {self.name}: status must be 'ran' or 'cached', got {self.status!r}")
        if self.seconds < 0:
            raise WorkbenchError(f"step {self.name}: negative duration {self.seconds}")
        self.notebook, self.html = Path(self.notebook), Path(self.html)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "notebook": str(self.notebook),
            "html": str(self.html),
            "outputs": list(self.outputs),
        }


@dataclass
class RunResult:
    """A completed pipeline run.

    Example:
        >>> r = RunResult("demo-0123456789ab", Path("reports/demo-0123456789ab"), "0123456789ab", [])
        >>> r.to_dict()["state"]
        'complete'
    """

    run_id: str
    run_dir: Path
    config_hash: str
    steps: list[StepResult]

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        if not _RUN_ID.match(self.run_id):
            raise WorkbenchError(f"invalid run id {self.run_id!r}")

    @property
    def cached(self) -> list[str]:
        return [s.name for s in self.steps if s.status == "cached"]

    @property
    def ran(self) -> list[str]:
        return [s.name for s in self.steps if s.status == "ran"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "config_hash": self.config_hash,
            "state": "complete",
            "steps": [s.to_dict() for s in self.steps],
        }

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame([s.to_dict() for s in self.steps])


def run_id_for(config: RunConfig, tag: str | None = None) -> str:
    """``<tag or config.name>-<config hash>``: stable, so a re-run finds its cache."""
    label = tag or config.name
    if not _RUN_ID.match(label):
        what = "tag" if tag else "config name"
        raise WorkbenchError(
            f"{what} {label!r} cannot name a run folder: use letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit)"
        )
    return f"{label}-{config.hash}"


def check_kernel(kernel_name: str = "python3") -> str:
    """Return the interpreter the Jupyter kernel runs; raise unless it is this environment's python.

    A kernel from another environment would import another (or no) ``workbench`` and give results
    that do not match this checkout.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    fix = f"{sys.executable} -m ipykernel install --sys-prefix --name {kernel_name}"
    try:
        spec = KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        raise WorkbenchError(f"Jupyter kernel {kernel_name!r} not found; install it with: {fix}") from None
    exe = spec.argv[0] if spec.argv else ""
    # jupyter_client starts a bare "python"/"python3" kernel with the caller's own sys.executable
    if exe in ("python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])):
        return sys.executable
    found = shutil.which(exe) or exe
    if Path(found).absolute().parent != Path(sys.executable).absolute().parent:
        raise WorkbenchError(
            f"Jupyter kernel {kernel_name!r} ({spec.resource_dir}) runs {exe}, not this environment's "
            f"{sys.executable}; fix with: {fix}"
        )
    return found


def notebook_parameters(notebook: Path) -> dict[str, Any]:
    """Parameters a notebook declares in its ``parameters`` cell (name → papermill's description)."""
    import papermill

    try:
        return papermill.inspect_notebook(str(notebook))
    except Exception as err:  # papermill raises nbformat/JSON errors of several types for a bad file
        raise WorkbenchError(f"cannot read notebook parameters: {err}", path=notebook) from None


def base_parameters(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    """The parameters every notebook receives."""
    return {"config": config.to_dict(), "run_dir": str(Path(run_dir).absolute())}


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _say(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def _to_html(notebook: Path) -> Path:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(notebook))
    return write_text(notebook.with_suffix(".html"), body)


def _validate_inputs(notebooks: Sequence[Path], params: dict[str, dict[str, Any]]) -> None:
    for nb in notebooks:
        declared = notebook_parameters(nb)
        if not declared:
            raise WorkbenchError(
                f"has no 'parameters' cell (tag a cell 'parameters' declaring {', '.join(sorted(params[nb.stem]))})",
                path=nb,
            )
        unknown = sorted(set(params[nb.stem]) - set(declared))
        if unknown:
            raise WorkbenchError(
                f"parameter(s) {', '.join(unknown)} not declared in the notebook's parameters cell; "
                f"valid: {', '.join(sorted(declared))}",
                path=nb,
            )


def run_pipeline(
    config: RunConfig,
    notebooks: Sequence[str | Path],
    reports_dir: str | Path,
    tag: str | None = None,
    force: bool = False,
    params_for: ParamsFor | None = None,
    *,
    kernel_name: str = "python3",
    wait: bool = False,
    step_context: StepContext | None = None,
    plan: RunPlan | None = None,
) -> RunResult:
    """Execute ``notebooks`` in order into ``reports_dir/<run-id>/``, skipping steps already done.

    Args:
        config: the run's config; its hash keys the cache.
        notebooks: notebook files, run in the given order.
        reports_dir: parent folder of run folders.
        tag: run label (default ``config.name``); the run id is ``<tag>-<config hash>``.
        force: re-run every step even if cached.
        params_for: extra papermill parameters per notebook, called with the notebook's stem.
        kernel_name: Jupyter kernel; must run this environment's python (:func:`check_kernel`).
        wait: if another process is running this run folder, wait for it instead of failing.
        step_context: called with each notebook's stem; its kernel runs inside what it returns
            (:class:`~workbench.sweep.cluster.ReportCluster`).
        plan: ``config`` resolved (:func:`workbench.steps.preflight`); made here when not given.
            Written to ``<run>/plan.json``, where every notebook reads it.

    Returns:
        :class:`RunResult` with one :class:`StepResult` per notebook.

    Raises:
        WorkbenchError: before any work, for a missing notebook, a parameter a notebook does not
            declare, a missing dataset path or a kernel from another environment; during the run,
            for a failing cell (naming the notebook and cell; ``status.json`` then says ``failed``
            and the partially executed notebook is kept for inspection), or when another process
            holds the run folder (naming it; see ``wait``).
        Interrupted: SIGTERM/SIGINT during the run (under
            :func:`~workbench.runlock.signals_as_exceptions`); ``status.json`` then says ``failed``.
    """
    notebooks = [Path(nb) for nb in notebooks]
    if not notebooks:
        raise WorkbenchError("no notebooks to run")
    for nb in notebooks:
        if nb.suffix != ".ipynb" or not nb.is_file():
            raise WorkbenchError("notebook not found (expected an existing .ipynb file)", path=nb)
    stems = [nb.stem for nb in notebooks]
    if len(set(stems)) != len(stems):
        raise WorkbenchError(f"notebook names must be unique within a run, got {', '.join(stems)}")

    run_id = run_id_for(config, tag)
    run_dir = Path(reports_dir) / run_id
    params = {
        nb.stem: {**base_parameters(config, run_dir), **dict(params_for(nb.stem) if params_for else {})}
        for nb in notebooks
    }
    if plan is None:
        plan = make_plan(config)
    elif plan.config.to_dict() != config.to_dict():
        raise WorkbenchError(f"the plan was made from another config than {config.name!r}")
    _validate_inputs(notebooks, params)
    check_kernel(kernel_name)

    with run_lock(run_dir, wait=wait):
        return _run_locked(
            plan, notebooks, run_dir, run_id, params, tag, force, kernel_name, step_context or nullcontext
        )


def _run_locked(
    plan: RunPlan,
    notebooks: list[Path],
    run_dir: Path,
    run_id: str,
    params: dict[str, dict[str, Any]],
    tag: str | None,
    force: bool,
    kernel_name: str,
    step_context: StepContext,
) -> RunResult:
    config, stems = plan.config, [nb.stem for nb in notebooks]
    steps_dir = run_dir / STEPS_DIR
    steps_dir.mkdir(parents=True, exist_ok=True)
    expected = {nb.stem: expected_record(config, nb, params[nb.stem]) for nb in notebooks}
    records = {nb.stem: read_record(steps_dir / f"{nb.stem}.json") for nb in notebooks}
    latest = latest_checksums(records)
    # A linear pipeline: once one step must run, every later step runs too.
    first_to_run, why = len(notebooks), None
    for i, nb in enumerate(notebooks):
        why = (
            "--force" if force else is_cached(records[nb.stem], expected[nb.stem], run_dir / nb.name, latest)
        )
        if why is not None:
            first_to_run = i
            break

    status: dict[str, Any] = {
        "run_id": run_id, "tag": tag, "config_name": config.name, "config_hash": config.hash,
        "started": _now(), "steps": stems,
    }  # fmt: skip
    todo = notebooks[first_to_run:]
    if todo:
        write_json(run_dir / STATUS_JSON, {**status, "state": "running", "step": todo[0].stem})
        invalidate(run_dir, todo, records)
        write_text(run_dir / CONFIG_YAML, config.to_yaml())
        plan.write(run_dir)
        prov = Provenance.collect(config.hash)
        write_json(run_dir / PROVENANCE_JSON, prov.to_dict())

    results: list[StepResult] = []
    for nb in notebooks[:first_to_run]:
        _say(f"step {nb.stem}: cached (config {config.hash}), use --force to redo")
        results.append(
            StepResult(
                nb.stem,
                "cached",
                0.0,
                run_dir / nb.name,
                run_dir / f"{nb.stem}.html",
                (records[nb.stem] or {}).get("outputs", []),
            )
        )

    if todo:
        _say(f"step {todo[0].stem}: running ({why})" + (", and every step after it" if len(todo) > 1 else ""))
    for nb in tqdm(todo, desc=run_id, unit="step", file=sys.stderr, disable=not todo):
        results.append(
            _run_step(nb, run_dir, params[nb.stem], expected[nb.stem], status, kernel_name, step_context)
        )

    previous = read_record(run_dir / STATUS_JSON) or {}
    if todo or previous.get("state") != "complete":
        write_json(run_dir / STATUS_JSON, {**status, "state": "complete", "step": None, "finished": _now()})
    return RunResult(run_id, run_dir, config.hash, results)


def _run_step(
    nb: Path, run_dir: Path, params: dict[str, Any], expected: dict[str, Any], status: dict[str, Any],
    kernel_name: str, step_context: StepContext,
) -> StepResult:  # fmt: skip
    """Execute one notebook; on any failure or signal, leave status ``failed`` naming the step."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    executed = run_dir / nb.name
    write_json(run_dir / STATUS_JSON, {**status, "state": "running", "step": nb.stem})
    try:
        before = snapshot(run_dir)
        started, t0 = _now(), time.perf_counter()
        try:
            with step_context(nb.stem):
                papermill.execute_notebook(
                    str(nb), str(executed), parameters=params, kernel_name=kernel_name,
                    progress_bar=False, cwd=os.getcwd(),
                    # hide the kernel app's own chatter (e.g. its TCP-without-encryption warning on
                    # every start); cell output and errors still land in the notebook
                    extra_arguments=["--IPKernelApp.log_level=ERROR"],
                )  # fmt: skip
        except PapermillExecutionError as err:
            raise_if_interrupted()  # the cell failed because a signal stopped the kernel
            source_lines = (err.source or "").strip().splitlines()
            first_line = source_lines[0] if source_lines else ""
            message = (
                f"step {nb.stem} failed in cell [{err.exec_count}] ({first_line!r}): "
                f"{err.ename}: {err.evalue}; partially executed notebook: {executed}"
            )
            _fail(run_dir, status, nb.stem, message, executed)
            raise WorkbenchError(message, path=nb) from None
        raise_if_interrupted()
        html = _to_html(executed)
        seconds = time.perf_counter() - t0
        outputs = write_record(
            run_dir, nb.stem, expected, before, _BOOKKEEPING | {executed.name, html.name},
            started=started, finished=_now(), seconds=round(seconds, 3),
        )  # fmt: skip
    except WorkbenchError:
        raise
    except BaseException as caught:  # kernel death, SIGTERM, Ctrl-C: still leave an honest status
        err = pending_interrupt() or caught  # a kernel stopped by a signal surfaces as another error
        if isinstance(err, (Interrupted, KeyboardInterrupt)):
            stop_children()  # the kernel must not keep writing into the folder after we are gone
        reason = str(err) if isinstance(err, Interrupted) else f"{type(err).__name__}: {err}"
        _fail(run_dir, status, nb.stem, f"step {nb.stem} did not finish: {reason}", executed)
        raise err from None
    _say(f"step {nb.stem}: done in {seconds:.1f} s")
    return StepResult(nb.stem, "ran", seconds, executed, html, outputs)


def _fail(run_dir: Path, status: dict[str, Any], step: str, error: str, executed: Path) -> None:
    write_json(
        run_dir / STATUS_JSON, {**status, "state": "failed", "step": step, "error": error, "finished": _now()}
    )
    if executed.is_file():
        try:
            _to_html(executed)  # so the failing cell can be read in a browser
        except Exception as err:  # the notebook may be truncated; the status already tells the story
            _say(f"step {step}: could not render the partial notebook: {err}")
