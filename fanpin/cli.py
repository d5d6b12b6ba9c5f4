"""The ``fanpin`` command."""

from __future__ import annotations

import contextlib
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


class _Group(click.Group):
    """Settings and Kafka connection problems end a command with their one-line reason
    (``Error: ...``, exit code 1) instead of a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        from fanpin.kafka_check import KafkaSetupError
        from fanpin.settings import SettingsError

        try:
            return super().invoke(ctx)
        except (KafkaSetupError, SettingsError) as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
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


def _export(settings, out: Path, *, public: bool = False) -> int:  # type: ignore[no-untyped-def]
    from sqlalchemy.orm import Session

    from consumers.watchlist.export import export_csv
    from consumers.watchlist.models import create_engine_for, init_db

    engine = create_engine_for(settings.watchlist_url)
    init_db(engine)
    out.parent.mkdir(parents=True, exist_ok=True)
    with Session(engine) as session:
        n = export_csv(session=session, out=out, health=not public)
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
@click.option("--public", is_flag=True, help="The version for posting (公示): no health "
              "details (illness or disability as risk types, medical rules).")
def watchlist_export(out: Path, public: bool) -> None:
    """Export every entry as CSV (户编号, 行政区划代码, 风险类型, 预警月份, 状态, ...)."""
    n = _export(get_settings(), out, public=public)
    click.echo(f"{n} entries written to {out}")


# --- accounts -------------------------------------------------------------------------

ROLE_HELP = ("village (村级干部, 12-digit village code), township (乡镇干部, 9 digits), "
             "county_lead (县级负责人, 6 digits), publisher (部门数据发布员, no region), "
             "admin (管理员, no region)")


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@contextlib.contextmanager
def _accounts_session():  # type: ignore[no-untyped-def]
    from sqlalchemy.orm import Session

    from consumers.watchlist.models import create_engine_for, init_db

    engine = create_engine_for(get_settings().watchlist_url)
    init_db(engine)
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


def _user_or_exit(session, username: str):  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from consumers.watchlist.models import User

    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise click.ClickException(f"no user {username!r}")
    return user


@main.group()
def users() -> None:
    """Manage watch-list accounts: who may log in, their role and region.

    \b
    Roles: village (own village), township (own township), county_lead (own county; assigns
    and escalates), publisher (department files only), admin (accounts; every region).
    Passwords are read from a hidden prompt, or from stdin with --password-stdin.
    """


@users.command("add")
@click.argument("username")
@click.option("--role", required=True, type=click.Choice(
    ["village", "township", "county_lead", "publisher", "admin"]), help=ROLE_HELP)
@click.option("--region", default="", help="Region code: 12 digits for a village officer, "
              "9 for a township officer, 6 for a county lead.")
@click.option("--name", default="", help="Display name shown on the pages.")
@click.option("--email", default=None, help="E-mail address for notifications.")
@click.option("--channels", default="", help="Notification channels, comma-separated: "
              "email,wecom,dingtalk.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
def users_add(username: str, role: str, region: str, name: str, email: str | None,
              channels: str, password_stdin: bool) -> None:
    """Create an account."""
    from consumers.watchlist.auth import AccountError, create_user

    password = _read_password(password_stdin)
    with _accounts_session() as session:
        try:
            create_user(session=session, username=username, password=password, role=role,
                        region_code=region, display_name=name, email=email,
                        channels=channels)
        except AccountError as exc:
            raise click.ClickException(str(exc)) from None
        session.commit()
    click.echo(f"created {role} {username}" + (f" for region {region}" if region else ""))


@users.command("list")
def users_list() -> None:
    """List accounts (no passwords, no webhook secrets)."""
    from sqlalchemy import select

    from consumers.watchlist.models import User

    with _accounts_session() as session:
        rows = session.scalars(select(User).order_by(User.role, User.username)).all()
        click.echo(f"{'username':<20} {'role':<12} {'region':<13} {'active':<7} channels")
        for u in rows:
            click.echo(f"{u.username:<20} {u.role:<12} {u.region_code or '-':<13} "
                       f"{'yes' if u.active else 'no':<7} {u.channels or '-'}")


@users.command("passwd")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
def users_passwd(username: str, password_stdin: bool) -> None:
    """Set a new password; the user's sessions end."""
    from consumers.watchlist.auth import (
        AccountError,
        check_password_strength,
        end_sessions,
        hash_password,
    )

    password = _read_password(password_stdin)
    with _accounts_session() as session:
        user = _user_or_exit(session, username)
        try:
            check_password_strength(password)
        except AccountError as exc:
            raise click.ClickException(str(exc)) from None
        user.password_hash = hash_password(password)
        end_sessions(session=session, user=user)
        session.commit()
    click.echo(f"password changed for {username}; their sessions were ended")


@users.command("set")
@click.argument("username")
@click.option("--role", type=click.Choice(["village", "township", "county_lead", "publisher",
                                           "admin"]), default=None, help=ROLE_HELP)
@click.option("--region", default=None, help="New region code (see add).")
@click.option("--name", default=None, help="Display name.")
@click.option("--email", default=None, help="E-mail address.")
@click.option("--channels", default=None, help="email,wecom,dingtalk (empty for none).")
@click.option("--wecom-webhook", default=None, help="WeCom group-robot webhook URL.")
@click.option("--dingtalk-webhook", default=None, help="DingTalk robot webhook URL.")
@click.option("--dingtalk-secret", default=None, help="DingTalk signing secret (SEC...).")
@click.option("--active/--inactive", default=None, help="Allow or stop logins.")
def users_set(username: str, role: str | None, region: str | None, name: str | None,
              email: str | None, channels: str | None, wecom_webhook: str | None,
              dingtalk_webhook: str | None, dingtalk_secret: str | None,
              active: bool | None) -> None:
    """Change an account's role, region, channels or status."""
    from consumers.watchlist.auth import (
        AccountError,
        end_sessions,
        normalise_channels,
        validate_account,
    )

    with _accounts_session() as session:
        user = _user_or_exit(session, username)
        try:
            new_role = role or user.role
            new_region = user.region_code if region is None else region
            validate_account(username=username, role=new_role, region_code=new_region)
            scope_changed = (new_role, new_region) != (user.role, user.region_code)
            user.role, user.region_code = new_role, new_region
            if channels is not None:
                user.channels = normalise_channels(channels)
        except AccountError as exc:
            raise click.ClickException(str(exc)) from None
        for field, value in (("display_name", name), ("email", email),
                             ("wecom_webhook", wecom_webhook),
                             ("dingtalk_webhook", dingtalk_webhook),
                             ("dingtalk_secret", dingtalk_secret)):
            if value is not None:
                setattr(user, field, value or None if field != "display_name" else value)
        if active is not None:
            user.active = active
        if scope_changed or active is False:
            end_sessions(session=session, user=user)
        session.commit()
    click.echo(f"updated {username}")


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
@click.option("--notify/--no-notify", default=True, show_default=True,
              help="Also run the notifier (deadline sweep and sending) in this process. "
              "Turn it off when `fanpin notify` runs on its own.")
def web(host: str | None, port: int | None, notify: bool) -> None:
    """Serve the duty officers' workspace: the watch list, the workflow, the JSON API.

    Log in with an account made by `fanpin users add`. Every account sees only its own
    region. See docs/workspace.md.
    """
    import threading

    import uvicorn

    from consumers.watchlist import notify as notifier
    from consumers.watchlist.models import create_engine_for, init_db
    from consumers.watchlist.views import create_app
    from fanpin import metrics

    settings = get_settings()
    engine = create_engine_for(settings.watchlist_url)
    init_db(engine)
    metrics.set_build_info("web")
    metrics.register(metrics.watchlist_collector(engine))
    stop = threading.Event()
    loop = None
    if notify:
        loop = threading.Thread(target=notifier.run, name="notify", daemon=True,
                                kwargs={"settings": settings, "once": False, "stop": stop,
                                        "engine": engine})
        loop.start()
    try:
        uvicorn.run(create_app(engine=engine, metrics=True,
                               secure_cookies=settings.web_secure_cookies),
                    host=host or settings.web_host, port=port or settings.web_port,
                    log_level="warning")
    finally:
        stop.set()
        if loop is not None:
            loop.join(timeout=10)


@main.command()
@click.option("--once", is_flag=True, help="One sweep and one sending, then exit (for cron).")
def notify(once: bool) -> None:
    """Tell officers rather than have them look: new high-severity entries, reminders for
    entries nobody took within 2 days, overdue entries (15 days after the first lead) and
    their escalation to the county lead.

    Each person gets one grouped message per channel (WeCom or DingTalk group robot,
    e-mail over SMTP), at most every FANPIN_NOTIFY_MIN_INTERVAL_SECONDS. `fanpin web` runs
    this loop itself unless started with --no-notify.
    """
    from consumers.watchlist import notify as notifier

    notifier.run(get_settings(), once=once)


# Accounts the demo creates on its first run (the sample's city 9901 has counties 990121-3).
DEMO_ACCOUNTS = (
    ("admin", "admin", "", "管理员"),
    ("county", "county_lead", "990122", "县级负责人（演示）"),
    ("village", "village", "990122004004", "村级干部（演示）"),
    ("publisher", "publisher", "", "部门数据发布员（演示）"),
)


def _demo_accounts(settings) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    """Create the demo accounts once, with random passwords kept (mode 600) in
    var/demo-accounts.txt; return (username, role, password) for printing."""
    import secrets

    from sqlalchemy import select

    from consumers.watchlist.auth import create_user
    from consumers.watchlist.models import User

    path = settings.var_dir / "demo-accounts.txt"
    known: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            name, _, password = line.partition(" ")
            known[name] = password
    out = []
    with _accounts_session() as session:
        for username, role, region, display in DEMO_ACCOUNTS:
            exists = session.scalar(select(User.id).where(User.username == username))
            if exists is None:
                known[username] = secrets.token_urlsafe(9)
                create_user(session=session, username=username, password=known[username],
                            role=role, region_code=region, display_name=display)
            if username in known:
                out.append((username, role, known[username]))
        session.commit()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text("".join(f"{u} {p}\n" for u, p in known.items()), encoding="utf-8")
    return out


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
        for username, role, password in _demo_accounts(settings):
            click.echo(f"    log in as {username:<10} password {password:<14} ({role})")
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
