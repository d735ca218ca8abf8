"""Hostile SQL through `potstill query`: every statement that could write, attach, read files,
load extensions or change settings is refused with a clear error (exit 2), and the version's
files are byte-identical afterwards, even when the tests run as root (file permissions stop
nothing then). The refusals come from DuckDB: its parser says what a statement is, and its
settings (external access off, configuration locked) refuse file and settings access; the
second half of this file runs statements straight on the connection to prove the settings
hold on their own."""
import hashlib
import os

import duckdb
import pytest

import analysis_fixture as fx
from potstill.beam_pipelines.cli import main
from potstill.reports import analysis


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
    return fx.build(tmp_path_factory.mktemp("sql-root"))[0]


def snapshot(folder):
    """Every file under the version (names, bytes) and every folder: a change shows here."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        out[dirpath] = sorted(dirnames + filenames)
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[path] = hashlib.sha256(fh.read()).hexdigest()
    return out


HOSTILE = {  # name -> (SQL with {v} = the version folder, {t} = a scratch folder; what the error names)
    "copy_to_file": ("copy (select 1 as x) to '{t}/x.csv'", "COPY"),
    "copy_into_own_data": ("copy (select * from data) to '{v}/data/extra.parquet' (format parquet)", "COPY"),
    "copy_over_own_data": ("copy data to '{v}/data/part-0.parquet' (format parquet)", "COPY"),
    "copy_from_file": ("copy data from '{v}/rejected.parquet'", "COPY"),
    "export_database": ("export database '{t}/export'", "EXPORT"),
    "attach_file": ("attach '{t}/new.db' as evil", "ATTACH"),
    "attach_memory": ("attach ':memory:' as scratch", "ATTACH"),
    "detach": ("detach memory", "DETACH"),
    "install": ("install httpfs", "LOAD"),
    "load": ("load httpfs", "LOAD"),
    "set_external_access": ("set enable_external_access = true", "SET"),
    "reset_lock": ("reset lock_configuration", "SET"),
    "set_threads": ("set threads = 1", "SET"),
    "pragma": ("pragma enable_profiling", "PRAGMA"),
    "call": ("call pragma_version()", "CALL"),
    "checkpoint": ("checkpoint", "CALL"),
    "create_secret": ("create secret (type s3, key_id 'a', secret 'b')", "CREATE"),
    "create_table_on_file": ("create table t as select * from read_parquet('{v}/data/*.parquet')", "CREATE"),
    "create_table": ("create table t as select 1 as x", "CREATE"),
    "insert": ("insert into data select * from data", "INSERT"),
    "update": ("update data set label = 'negative'", "UPDATE"),
    "delete": ("delete from data", "DELETE"),
    "drop": ("drop table data", "DROP"),
    "read_csv_passwd": ("select * from read_csv('/etc/passwd')", "/etc/passwd"),
    "read_text": ("select * from read_text('/etc/passwd')", "/etc/passwd"),
    "read_blob": ("select * from read_blob('/etc/hostname')", "/etc/hostname"),
    "read_json": ("select * from read_json_auto('{v}/manifest.json')", "manifest.json"),
    "glob": ("select * from glob('/*')", "/*"),
    "replacement_scan": ("select * from '{v}/data/part-0.parquet'", "part-0.parquet"),
    "own_files_by_path": ("select count(*) from read_parquet('{v}/data/*.parquet')", "data/*.parquet"),
    "explain_analyze_copy": ("explain analyze copy data to '{t}/e.csv'", "e.csv"),
    "multi_statement": ("select 1; copy (select 1) to '{t}/y.csv'", "2 statements (SELECT, COPY)"),
    "multi_select": ("select 1; select 2", "2 statements (SELECT, SELECT)"),
    "line_comment_hides": ("-- just a comment\ncopy data to '{t}/z.csv'", "COPY"),
    "block_comment_hides": ("/* select 1 */ attach '{t}/c.db'", "ATTACH"),
    "comment_then_statement": ("select 1 -- harmless\n; attach '{t}/d.db'", "2 statements (SELECT, ATTACH)"),
    "empty": ("-- nothing but a comment", "0 statements"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_statement_is_refused_and_the_version_is_unchanged(name, v1, tmp_path, capsys):
    sql, names = HOSTILE[name]
    sql = sql.format(v=v1, t=tmp_path)
    before = snapshot(v1)
    code = main(["query", str(v1), sql])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert "refused" in err and names in err and "Traceback" not in err
    assert snapshot(v1) == before
    assert list(tmp_path.iterdir()) == []  # nothing written to the scratch folder either


def test_a_statement_inside_a_comment_is_only_a_comment(v1, tmp_path, capsys):
    before = snapshot(v1)
    code = main(["query", str(v1), f"select 7 as n /* ; copy data to '{tmp_path}/x.csv' */",
                 "--format", "csv"])
    assert code == 0 and capsys.readouterr().out.splitlines() == ["n", "7"]
    assert snapshot(v1) == before and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sql", ["describe data", "summarize data", "show tables",
                                 "from data select count(*)", "pivot data on label using count(*)",
                                 "explain select * from data", "values (1), (2)",
                                 "with x as (select label from data) select count(*) from x",
                                 "select current_setting('enable_external_access') as on_"])
def test_read_only_queries_still_run(sql, v1, capsys):
    assert main(["query", str(v1), sql]) == 0
    assert capsys.readouterr().out


def test_out_inside_a_version_is_refused(v1, capsys):
    before = snapshot(v1)
    code = main(["query", str(v1), "select 1 as x", "--out", str(v1 / "data" / "x.csv")])
    assert code == 2 and "is inside the published version" in capsys.readouterr().err
    assert snapshot(v1) == before


# -- the DuckDB settings alone, without the statement check ------------------------------------

DIRECT = ["copy data to '{v}/data/extra.parquet' (format parquet)", "copy data to '{t}/x.csv'",
          "export database '{t}/e'", "attach '{t}/a.db'", "install httpfs", "load httpfs",
          "set enable_external_access = true", "set lock_configuration = false",
          "reset enable_external_access", "pragma threads = 1",
          "select * from read_csv('/etc/passwd')", "select * from read_parquet('{v}/data/*.parquet')",
          "create table t as select * from '{v}/rejected.parquet'", "select * from glob('{v}/*')"]


@pytest.mark.parametrize("sql", DIRECT)
def test_duckdb_settings_refuse_it_on_their_own(sql, v1, tmp_path):
    before = snapshot(v1)
    con = analysis.open_version(v1)
    try:
        with pytest.raises(duckdb.Error, match="disabled|locked"):
            con.execute(sql.format(v=v1, t=tmp_path))
        settings = "select current_setting('enable_external_access'), " \
            "current_setting('lock_configuration'), current_setting('allowed_directories'), " \
            "current_setting('allowed_paths'), current_setting('temp_directory')"
        assert con.execute(settings).fetchone() == (False, True, [], [], "")
        assert con.execute("select count(*) from data").fetchone() == (10,)
    finally:
        con.close()
    assert snapshot(v1) == before and list(tmp_path.iterdir()) == []


# -- time and memory: every query is bounded (potstill.reports.analysis.Limits) -------------------

ENDLESS = "with recursive t(n) as (select 1 union all select n + 1 from t) select count(*) from t"


def run_cli(*args, env=None, timeout=120):
    """`potstill ARGS` in a fresh process: (exit code, stderr, seconds, peak RSS in MiB)."""
    import subprocess
    import sys
    import time

    # VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across execve, so a child forked
    # from a large test process would report the parent's size, not its own peak
    code = ("import sys\nfrom potstill.beam_pipelines.cli import main\ncode = main(sys.argv[1:])\n"
            "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')).split()[1]\n"
            "print(f'maxrss={hwm}', file=sys.stderr)\n"
            "sys.exit(code)")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    rss = int(done.stderr.rsplit("maxrss=", 1)[1]) / 1024 if "maxrss=" in done.stderr else None
    return done.returncode, done.stderr, time.monotonic() - started, rss


def test_an_endless_recursive_query_stops_at_the_time_limit(v1):
    code, err, seconds, _ = run_cli("query", str(v1), ENDLESS, "--timeout", "2")
    assert code == 2 and "Traceback" not in err and seconds < 30
    assert "2 s" in err and "--timeout" in err and "POTSTILL_QUERY_TIMEOUT" in err
    code, err, seconds, _ = run_cli("query", str(v1), ENDLESS, env={"POTSTILL_QUERY_TIMEOUT": "1"})
    assert code == 2 and "--timeout" in err and seconds < 30


def test_a_ten_billion_row_result_stops_at_the_memory_limit(v1):
    code, err, seconds, rss = run_cli("query", str(v1), "select * from range(10000000000)",
                                      "--memory-limit", "256MB")
    assert code == 2 and "Traceback" not in err and seconds < 30 and rss < 1024
    assert "--memory-limit" in err and "LIMIT" in err and "256MB" in err


def test_a_query_past_the_memory_limit_says_which_flag_to_raise(v1, capsys):
    code = main(["query", str(v1), "select count(*) as groups from (select range % 1000003 as x, "
                 "count(*) as n from range(50000000) group by 1)", "--memory-limit", "64MB"])
    err = capsys.readouterr().err
    assert code == 2 and "--memory-limit" in err and "POTSTILL_QUERY_MEMORY_LIMIT" in err
    assert "SET" not in err and "temp_directory" not in err and "Traceback" not in err
    assert main(["query", str(v1), "select count(*) as n from range(50000000)",
                 "--memory-limit", "64MB"]) == 0  # streaming work fits


@pytest.mark.parametrize("args, message", [
    (["--memory-limit", "lots"], "--memory-limit: 'lots' is not a size"),
    (["--memory-limit", "1MB"], "at least 16MiB"),
    (["--timeout", "-1"], "--timeout"),
])
def test_bad_limits_are_one_clear_message(args, message, v1, capsys):
    assert main(["query", str(v1), "select 1", *args]) == 2
    assert message in capsys.readouterr().err


def test_the_limits_are_set_before_the_lock(v1):
    con = analysis.open_version(v1, limits=analysis.Limits("64MiB", threads=2))
    try:
        assert con.execute("select current_setting('memory_limit'), current_setting('threads'), "
                           "current_setting('lock_configuration')").fetchone() == ("64.0 MiB", 2, True)
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute("set memory_limit = '100GB'")
    finally:
        con.close()
    con = analysis.open_version(v1)  # user SQL is bounded by default
    try:
        assert con.execute("select current_setting('memory_limit')").fetchone() == ("953.6 MiB",)
    finally:
        con.close()


@pytest.mark.parametrize("command", [["diff", "{v1}", "{v2}"], ["label-issues", "{v1}"]])
def test_diff_and_label_issues_run_under_the_same_limits(command, v1, capsys, monkeypatch):
    """Their connections get the memory limit and threads, and their queries the timer."""
    import threading

    configs, timers = [], []
    connect, timer = duckdb.connect, threading.Timer

    def spy_connect(*args, config=None, **kw):
        configs.append(dict(config or {}))
        return connect(*args, config=config or {}, **kw)

    def spy_timer(seconds, function, *args, **kw):
        timers.append(seconds)
        return timer(seconds, function, *args, **kw)

    monkeypatch.setattr(duckdb, "connect", spy_connect)
    monkeypatch.setattr(threading, "Timer", spy_timer)
    v2 = v1.parent / "v2"
    args = [a.format(v1=v1, v2=v2) for a in command]
    assert main([*args, "--memory-limit", "300MB", "--timeout", "7", "--threads", "3"]) == 0, \
        capsys.readouterr().err
    assert configs and all(c.get("memory_limit") == "300000000B" and c.get("threads") == 3
                           for c in configs)
    assert timers and set(timers) == {7.0}
