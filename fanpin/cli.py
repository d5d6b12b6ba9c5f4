"""The ``fanpin`` command."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

import click

from fanpin.settings import get_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_SAMPLE = REPO_ROOT / "data" / "sample"
DEPARTMENTS = ("regions", "thresholds", "roster", "income", "medical", "employment")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kafka-python and aiokafka are chatty at INFO; their lines carry no personal data but
    # drown ours.
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(max(logging.ERROR, logging.getLogger().level))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING (default: FANPIN_LOG_LEVEL"
              " or INFO).")
@click.version_option(package_name="fanpin")
def main(log_level: str | None) -> None:
    """Fanpin (返贫): early warnings for households at risk of falling back into poverty.

    Department files go in, a watch list for duty officers comes out. With no
    configuration everything runs locally: an Apache Kafka broker under var/kafka, the
    watch list in SQLite at var/watchlist.db. Settings come from FANPIN_* environment
    variables (see the README's configuration reference).
    """
    _setup_logging(log_level or get_settings().log_level)
    # On SIGTERM unwind like Ctrl-C, so child processes and the broker we started are stopped.
    signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# --- broker ---------------------------------------------------------------------------

@main.group()
def broker() -> None:
    """The local single-node Apache Kafka broker (KRaft), used when no servers are set."""


@broker.command("start")
def broker_start() -> None:
    """Fetch the jars if needed, format the storage once, start the broker (or reuse it)."""
    from fanpin.broker import local_broker_for

    b = local_broker_for(get_settings())
    started = b.ensure_started()
    click.echo(f"{'started' if started else 'already running'}: Kafka on {b.bootstrap}")


@broker.command("stop")
def broker_stop() -> None:
    """Stop the local broker started from this folder (by its PID file)."""
    from fanpin.broker import local_broker_for

    local_broker_for(get_settings()).stop()
    click.echo("stopped")


@broker.command("status")
def broker_status() -> None:
    from fanpin.broker import local_broker_for, port_open

    b = local_broker_for(get_settings())
    click.echo(f"{b.bootstrap}: {'up' if port_open(b.port) else 'down'}"
               f" (pid file {b.read_pid() or '-'})")


# --- publishing -------------------------------------------------------------------------

@main.command()
@click.argument("dept", type=click.Choice(DEPARTMENTS))
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--rejects", type=click.Path(path_type=Path),
              help="Write the reject report (文件, 行号, 原因) here.")
@click.option("--roster", type=click.Path(exists=True, path_type=Path),
              help="roster.csv to check household numbers against (default: the one next to"
                   " PATH's folder, if any).")
@click.option("--jobs", type=click.IntRange(1, 64), default=None,
              help="Processes that parse one big file (over 1 MB) in shares; its rows still "
                   "reach every partition in file order. Default: the number of CPU cores.")
def publish(dept: str, path: Path, rejects: Path | None, roster: Path | None,
            jobs: int | None) -> None:
    """Validate and publish one department's file, or every .csv in a folder.

    Invalid rows are left out with a reason in the reject report; the rest go through.
    ID numbers are pseudonymised and names dropped before anything is sent.
    """
    from fanpin.broker import local_broker_for
    from fanpin.privacy import Pseudonymiser
    from producers import FORMATS
    from producers.common import ParseContext
    from producers.publish import Publisher, PublishResult, write_rejects
    from producers.scenario import load_known_households

    settings = get_settings()
    module = FORMATS[dept]
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    scenario_root = path.parent.parent if path.is_file() else path.parent
    roster = roster or next((p for p in (scenario_root / "roster.csv",
                                         path.parent / "roster.csv") if p.exists()), None)
    ctx = ParseContext(Pseudonymiser(settings.pseudonym_secret()),
                       load_known_households(roster) if roster else None)
    if settings.uses_local_broker:
        local_broker_for(settings).ensure_started()
    _ensure_topics(settings)
    publisher = Publisher(settings, jobs=jobs or os.cpu_count() or 1)
    total = PublishResult()
    started = time.monotonic()
    try:
        for f in files:
            rel = f"{f.parent.name}/{f.name}" if dept in ("income", "medical", "employment") \
                else f.name
            total.merge(publisher.publish_file(module, f, rel, ctx))
    finally:
        publisher.close()
    _batch_metrics("fanpin_publish", settings, total, time.monotonic() - started)
    click.echo(f"published {total.events} events from {len(files)} file(s); "
               f"{len(total.rejects)} rows rejected; {len(total.file_errors)} files rejected")
    for file, message in total.file_errors:
        click.echo(f"  {file}: {message}", err=True)
    if rejects:
        write_rejects(rejects, total.rejects, total.file_errors)
        click.echo(f"reject report: {rejects}")
    if total.file_errors:
        sys.exit(1)


@main.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--export", "export_path", type=click.Path(path_type=Path),
              help="Write the watch list as CSV here when done.")
@click.option("--rejects", type=click.Path(path_type=Path),
              help="Reject report path (default: var/reports/<folder>-rejects.csv).")
@click.option("--timeout", default=900.0, show_default=True,
              help="Seconds to wait for the pipeline to catch up at each step.")
def replay(directory: Path, export_path: Path | None, rejects: Path | None,
           timeout: float) -> None:
    """Replay a scenario folder (laid out like the sample) through the whole pipeline.

    Publishes regions, thresholds and the roster, then month by month every department's
    files; waits until every event is processed and every alert is in the watch list;
    writes the reject report (and the export) and prints a summary. Starts the local
    broker, a worker and a sink when none are running, and stops what it started.
    """
    from fanpin.replay import replay as run_replay
    from producers.publish import write_rejects

    settings = get_settings()
    click.echo(f"replaying {directory} ...")
    summary = run_replay(settings, directory, timeout=timeout)
    _batch_metrics("fanpin_replay", settings, summary.published, summary.seconds)
    rejects = rejects or settings.var_dir / "reports" / f"{directory.resolve().name}-rejects.csv"
    n_rejects = write_rejects(rejects, summary.published.rejects, summary.published.file_errors)
    counts = _watchlist_counts(settings)
    click.echo(f"files: {summary.files}  events published: {summary.published.events}  "
               f"rows rejected: {n_rejects}  alerts: {summary.alerts}  "
               f"time: {summary.seconds:.1f}s")
    click.echo("watch list: " + ("  ".join(f"{k} {v}" for k, v in counts.items()) or "empty"))
    click.echo(f"reject report: {rejects}")
    if export_path:
        n = _export(settings, export_path)
        click.echo(f"export: {export_path} ({n} entries)")


def _batch_metrics(job: str, settings, published, seconds: float) -> None:  # type: ignore[no-untyped-def]
    """Leave the run's figures for Prometheus (textfile, and Pushgateway if configured)."""
    from fanpin.metrics import BatchReport

    report = BatchReport(job)
    report.add(published.receipts)
    report.flush(settings, seconds)


def _watchlist_counts(settings) -> dict[str, int]:  # type: ignore[no-untyped-def]
    from sqlalchemy.orm import Session

    from consumers.watchlist.models import create_engine_for, init_db
    from consumers.watchlist.service import counts_by_state

    engine = create_engine_for(settings.watchlist_url)
    init_db(engine)
    with Session(engine) as session:
        counts = counts_by_state(session=session)
    engine.dispose()
    return counts


def _export(settings, out: Path) -> int:  # type: ignore[no-untyped-def]
    from sqlalchemy.orm import Session

    from consumers.watchlist.export import export_csv
    from consumers.watchlist.models import create_engine_for, init_db

    engine = create_engine_for(settings.watchlist_url)
    init_db(engine)
    out.parent.mkdir(parents=True, exist_ok=True)
    with Session(engine) as session:
        n = export_csv(session=session, out=out)
    engine.dispose()
    return int(n or 0)


@main.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--alerts", "export_path", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A watch-list export (fanpin watchlist export / replay --export). "
                   "Without it, the rules run offline over DIRECTORY's files.")
@click.option("--method", type=click.Choice(["fanpin", "naive", "projection", "all"]),
              default="fanpin", show_default=True,
              help="Offline only: Fanpin's rules, an anchor (the departments' triggers, a "
                   "plain projection), or all three side by side.")
@click.option("--rules", "rules_file", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Offline only: a rules file to try (default: FANPIN_RULES_FILE or the "
                   "bundled rules).")
def evaluate(directory: Path, export_path: Path | None, method: str,
             rules_file: Path | None) -> None:
    """Score a watch list against DIRECTORY/truth.csv.

    Prints recall, precision, median delay after the shock, a per-cause breakdown,
    risk-type accuracy and entries per at-risk household. With --alerts it scores that
    export (for example from `fanpin replay DIRECTORY --export`); without, it runs the
    detection rules in memory over the scenario, which takes seconds and needs no broker.

    \b
    Examples:
      fanpin simulate /tmp/s --households 2000 --months 24 --seed 7
      fanpin evaluate /tmp/s --method all
      fanpin replay /tmp/s --export /tmp/s.csv && fanpin evaluate /tmp/s --alerts /tmp/s.csv
    """
    from fanpin import evaluate as ev

    if not (directory / "truth.csv").exists():
        raise click.UsageError(f"{directory} has no truth.csv to score against")
    if export_path is not None:
        if method != "fanpin" or rules_file is not None:
            raise click.UsageError("--method and --rules apply to offline runs, not --alerts")
        click.echo(ev.evaluate(directory, export_path, ev.scenario_events(directory)).report())
        return
    if rules_file is None:
        rules_file = get_settings().rules_file
    events = ev.scenario_events(directory)
    if method == "all":
        results = {"fanpin": ev.run_rules(directory, events, rules_file),
                   "naive": ev.run_anchor(directory, "naive", events),
                   "projection": ev.run_anchor(directory, "projection", events)}
        click.echo(ev.comparison(results))
        click.echo("")
        click.echo("fanpin:")
        click.echo(results["fanpin"].report())
    elif method == "fanpin":
        click.echo(ev.run_rules(directory, events, rules_file).report())
    else:
        click.echo(ev.run_anchor(directory, method, events).report())


# --- scenarios --------------------------------------------------------------------------

@main.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--households", "-n", type=click.IntRange(1, 990_000), default=300,
              show_default=True, help="Households in the roster (the sample has 300).")
@click.option("--months", type=click.IntRange(1, 600), default=24, show_default=True,
              help="Months of department files to write (11 more are simulated for truth).")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Random seed: the same seed and options give the same bytes.")
@click.option("--start", default="2024-11", show_default=True, metavar="YYYY-MM",
              help="First month.")
@click.option("--mess", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Multiplier of the rates of invalid rows (about 0.25%), duplicated, reversed"
                   " and late medical settlements; 1 is the sample's level, 0 is clean.")
@click.option("--shock-rate", type=click.FloatRange(0, 1), default=None,
              help="Share of households given a shock (default 0.12, as in the sample).")
@click.option("--mix", default=None, metavar="illness=W,job=W,business=W",
              help="Shock mix (因病, 因务工就业不稳, 因产业项目失败), weights normalised;"
                   " default illness=0.38,job=0.38,business=0.24. Job shocks go to households"
                   " with earners.")
@click.option("--poor-share", type=click.FloatRange(0, 1), default=None,
              help="Make this share of households poor all along (and the rest at least 30%"
                   " above the line). Default: leave it to the household model, about 9% as in"
                   " the sample.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: the CPUs, at most 8). The files do not depend"
                   " on it.")
@click.option("--force", is_flag=True, help="Overwrite the scenario files in a non-empty OUT.")
def simulate(out: Path, households: int, months: int, seed: int, start: str, mess: float,
             shock_rate: float | None, mix: str | None, poor_share: float | None,
             jobs: int | None, force: bool) -> None:
    """Write a synthetic scenario folder OUT laid out like the departments' sample.

    Same files, encodings, columns and id styles as ../shared/feeds/sample, the same kind
    of households, incomes, medical settlements, employment events, shocks and mess, plus
    bad_rows.csv (the invalid rows made on purpose) and truth.csv (who really was at risk,
    from when, and why). Replay it with `fanpin replay OUT`, score with `fanpin evaluate`.
    """
    from fanpin.simulate import SimulateError
    from fanpin.simulate import simulate as run_simulation

    try:
        summary = run_simulation(out, households=households, months=months, seed=seed,
                                 start=start, mess=mess, shock_rate=shock_rate, mix=mix,
                                 poor_share=poor_share, force=force, jobs=jobs,
                                 progress=True)
    except SimulateError as e:
        raise click.UsageError(str(e)) from None
    click.echo(f"{out}: {summary.line()}")


# --- the watch list -------------------------------------------------------------------

@main.group()
def watchlist() -> None:
    """The duty officers' watch list."""


@watchlist.command("export")
@click.option("--out", type=click.Path(path_type=Path), default=Path("watchlist.csv"),
              show_default=True, help="CSV file to write (UTF-8 with BOM, opens in Excel).")
def watchlist_export(out: Path) -> None:
    """Export every entry as CSV (户编号, 行政区划代码, 风险类型, 预警月份, 状态, ...)."""
    n = _export(get_settings(), out)
    click.echo(f"{n} entries written to {out}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(as_json: bool) -> None:
    """Is the pipeline keeping up? Did every department send its file?

    Shows each feed's last file and its rows, the worker's and the sink's liveness and
    consumer lag, the dead-letter count, and the watch list by state with overdue entries.
    Exits 1 when the broker, the worker, the sink or the watch list is down.
    """
    import json

    from fanpin.status import gather, render

    st = gather(get_settings())
    if as_json:
        click.echo(json.dumps(st.as_dict(), ensure_ascii=False, indent=2))
    else:
        click.echo(render(st))
    if not st.healthy:
        sys.exit(1)


# --- long-running processes -------------------------------------------------------------

def _ensure_topics(settings) -> None:  # type: ignore[no-untyped-def]
    """Create Fanpin's topics with their partition counts before anything subscribes, so a
    broker's auto-creation never picks the count (reference data needs one partition)."""
    from fanpin.kafka_admin import Admin

    admin = Admin(settings)
    try:
        admin.ensure_topics()
    finally:
        admin.close()


METRICS_PORT_HELP = "Serve /metrics on this port (0: off). Default: FANPIN_{}_METRICS_PORT or {}."


@main.command()
@click.option("--metrics-port", type=int, default=None,
              help=METRICS_PORT_HELP.format("WORKER", 18091))
def worker(metrics_port: int | None) -> None:
    """Run the stream worker (Faust agents: roster join and household risk detector).

    Start several on one or more machines with the same settings: they share the
    partitions, and when one stops the others take over its households' state.
    """
    from fanpin import metrics
    from fanpin.broker import local_broker_for

    settings = get_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)  # Faust makes only its own folder
    if settings.uses_local_broker:
        local_broker_for(settings).ensure_started()
    _ensure_topics(settings)
    from streams.agents import policy
    from streams.app import app

    metrics.set_build_info("worker", policy.config.version)
    metrics.serve(settings.worker_metrics_port if metrics_port is None else metrics_port,
                  settings.metrics_host)

    level = logging.getLevelName(logging.getLogger().level).lower()
    level = {"warning": "warn", "critical": "crit"}.get(level, level)  # Faust's spelling
    sys.argv = ["fanpin-worker", "worker", "--without-web", "-l", level]
    app.main()


@main.command()
@click.option("--metrics-port", type=int, default=None,
              help=METRICS_PORT_HELP.format("SINK", 18092))
def sink(metrics_port: int | None) -> None:
    """Run the alert sink: alerts topic -> watch list (SQLite or PostgreSQL).

    Its /metrics also carries every pipeline consumer group's lag, read from the broker.
    """
    from consumers.sink import run_sink
    from fanpin import metrics

    settings = get_settings()
    _ensure_topics(settings)
    metrics.set_build_info("sink")
    metrics.register(metrics.consumer_lag_collector(settings))
    metrics.serve(settings.sink_metrics_port if metrics_port is None else metrics_port,
                  settings.metrics_host)
    run_sink(settings)


@main.command()
@click.option("--host", default=None, help="Default: FANPIN_WEB_HOST or 127.0.0.1.")
@click.option("--port", default=None, type=int, help="Default: FANPIN_WEB_PORT or 18080.")
def web(host: str | None, port: int | None) -> None:
    """Serve the watch-list pages for duty officers."""
    import uvicorn

    from consumers.watchlist.models import create_engine_for, init_db
    from consumers.watchlist.views import create_app
    from fanpin import metrics

    settings = get_settings()
    engine = create_engine_for(settings.watchlist_url)
    init_db(engine)
    metrics.set_build_info("web")
    metrics.register(metrics.watchlist_collector(engine))
    uvicorn.run(create_app(engine=engine, metrics=True), host=host or settings.web_host,
                port=port or settings.web_port, log_level="warning")


@main.command()
@click.argument("directory", required=False,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
def demo(directory: Path | None) -> None:
    """Start everything on embedded defaults, replay the bundled sample, keep serving.

    Broker, worker, sink and the watch-list page run until Ctrl-C; then everything this
    command started is stopped.
    """
    from fanpin.replay import replay as run_replay
    from fanpin.services import Services
    from producers.publish import write_rejects

    settings = get_settings()
    directory = directory or BUNDLED_SAMPLE
    url = f"http://{settings.web_host}:{settings.web_port}/"
    with Services(settings, need=("worker", "sink")) as services:
        services.spawn("web")
        summary = run_replay(settings, directory)
        _batch_metrics("fanpin_replay", settings, summary.published, summary.seconds)
        rejects = settings.var_dir / "reports" / "sample-rejects.csv"
        write_rejects(rejects, summary.published.rejects, summary.published.file_errors)
        export = settings.var_dir / "reports" / "watchlist.csv"
        n = _export(settings, export)
        click.echo("")
        click.echo(f"  Replayed {directory}: {summary.published.events} events, "
                   f"{len(summary.published.rejects)} rows rejected, {n} watch-list entries.")
        click.echo(f"  Watch list (预警名单):  {url}")
        click.echo(f"  Export:                {export}")
        click.echo(f"  Reject report:         {rejects}")
        click.echo(f"  Logs:                  {services.log_dir}")
        click.echo(f"  Metrics:               {url}metrics, http://{settings.metrics_host}:"
                   f"{settings.worker_metrics_port}/metrics (worker), "
                   f"http://{settings.metrics_host}:{settings.sink_metrics_port}/metrics (sink)")
        click.echo("  Press Ctrl-C to stop.")
        try:
            while True:
                services.check_alive()
                time.sleep(1)
        except KeyboardInterrupt:
            click.echo("stopping ...")


if __name__ == "__main__":
    main()
