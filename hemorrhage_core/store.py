"""DuckDB store: runs, scalar metrics, and tidy per-layer / per-head / distribution rows.

All SQL goes through `Store._run` (one choke point, `?` parameters only). DuckDB lets one process hold a file
read-write at a time, so the store never keeps a file open: each call connects, works and closes, retrying while
another process (the app, a command-line sweep) holds the lock. A run's rows are written in one transaction, so a
run killed half-way leaves nothing behind, and the run key is the primary key, so two writers cannot duplicate it.
A damaged or unreadable file raises StoreError and is left untouched: stored results are never deleted.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from .errors import StoreError

log = logging.getLogger(__name__)

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS runs (
        run_key VARCHAR PRIMARY KEY,
        model VARCHAR NOT NULL,
        label VARCHAR NOT NULL,
        spec_json VARCHAR NOT NULL,
        corpus VARCHAR NOT NULL,
        corpus_sha256 VARCHAR NOT NULL,
        window_tokens INTEGER NOT NULL,
        stride INTEGER NOT NULL,
        token_budget INTEGER NOT NULL,
        code_version VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL,
        wall_s DOUBLE,
        report_json VARCHAR
    )""",
    "CREATE TABLE IF NOT EXISTS metrics (run_key VARCHAR, name VARCHAR, value DOUBLE, PRIMARY KEY (run_key, name))",
    """CREATE TABLE IF NOT EXISTS layer_metrics (
        run_key VARCHAR, layer INTEGER, metric VARCHAR, value DOUBLE, PRIMARY KEY (run_key, layer, metric))""",
    """CREATE TABLE IF NOT EXISTS head_metrics (
        run_key VARCHAR, layer INTEGER, head INTEGER, metric VARCHAR, value DOUBLE,
        PRIMARY KEY (run_key, layer, head, metric))""",
    """CREATE TABLE IF NOT EXISTS distributions (
        run_key VARCHAR, name VARCHAR, bin_lo DOUBLE, bin_hi DOUBLE, count BIGINT,
        PRIMARY KEY (run_key, name, bin_lo))""",
    # One row per (sweep, model): the knob, its settings and run keys in order, and the thresholds found
    # (analysis/sweeps.py). The id hashes model, knob and run keys, so re-running a sweep replaces its row.
    """CREATE TABLE IF NOT EXISTS sweeps (
        sweep_id VARCHAR PRIMARY KEY, model VARCHAR NOT NULL, param VARCHAR NOT NULL, values_json VARCHAR NOT NULL,
        run_keys_json VARCHAR NOT NULL, summary_json VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL)""",
    # Results of analyses computed on demand for a run (per-module errors, cloze flips): tidy rows keyed by the
    # run, the analysis name and an item (a module name, a cloze set id, ...).
    """CREATE TABLE IF NOT EXISTS analysis_results (
        run_key VARCHAR, analysis VARCHAR, item VARCHAR, metric VARCHAR, value DOUBLE,
        PRIMARY KEY (run_key, analysis, item, metric))""",
]

CHILD_TABLES = ("metrics", "layer_metrics", "head_metrics", "distributions", "analysis_results")
LOCK_MARKERS = ("could not set lock", "conflicting lock", "resource temporarily unavailable")


_DUCKDB_MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file


_COLUMNS_SQL = (
    "SELECT table_name, list(column_name ORDER BY ordinal_position) FROM information_schema.columns "
    "WHERE table_schema = 'main' GROUP BY table_name"
)


def _tables(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    return dict(con.execute(_COLUMNS_SQL).fetchall())


def _schema_tables() -> dict[str, list[str]]:
    """The tables and columns SCHEMA creates, read back from a scratch in-memory database."""
    scratch = duckdb.connect(":memory:")
    try:
        for sql in SCHEMA:
            scratch.execute(sql)
        return _tables(scratch)
    finally:
        scratch.close()


def con_path(con: duckdb.DuckDBPyConnection) -> str:
    row = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    return str(row[0]) if row and row[0] else "the database"


def _check_file(path: Path) -> None:
    """StoreError, before DuckDB opens anything, for a path that cannot be a results database."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise StoreError(
                    f"cannot create the results database {path}: {parent} is a file, not a folder"
                )
            break
    if path.is_dir():
        raise StoreError(
            f"the results database {path} is a folder; give a file path such as {path / 'hemlab.duckdb'}"
        )
    if path.is_file():
        with path.open("rb") as f:
            head = f.read(16)
        if len(head) < 12 or head[8:12] != _DUCKDB_MAGIC:
            kind = "an SQLite database" if head.startswith(b"SQLite format 3") else "not a DuckDB database"
            if not head:
                kind = "an empty file"
            raise StoreError(
                f"{path} is {kind}, so it cannot hold results. It was left untouched; pass another --db."
            )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the folder of the results database {path}: {exc}") from exc


@dataclass
class StoredRun:
    run_key: str
    row: dict[str, Any]
    metrics: dict[str, float]
    layers: pd.DataFrame
    heads: pd.DataFrame
    kl_hist: pd.DataFrame


class Store:
    """A results database: a file path or ':memory:' (tests)."""

    def __init__(self, path: str | Path = ":memory:", *, lock_timeout_s: float = 60.0):
        self.path = str(path)
        self.lock_timeout_s = lock_timeout_s
        self._memory = self.path == ":memory:"
        self._memory_con = duckdb.connect(":memory:") if self._memory else None
        # duckdb connections are not safe to share across threads; one writer at a time within a process.
        self._lock = threading.RLock()
        if not self._memory:
            _check_file(Path(self.path))
        self._run(self._create_or_check_schema)

    @staticmethod
    def _create_or_check_schema(con: duckdb.DuckDBPyConnection) -> None:
        """Create the tables in a new file; refuse, before writing anything, a file that holds other tables or
        tables of this name with other columns (another program's database)."""
        existing, ours = _tables(con), _schema_tables()
        foreign = sorted(set(existing) - set(ours))
        changed = sorted(t for t in set(existing) & set(ours) if existing[t] != ours[t])
        if foreign or changed:
            found = ", ".join(foreign + [f"{t} (other columns)" for t in changed])
            raise StoreError(
                f"{con_path(con)} is a DuckDB database of another program: it holds tables that are not Hemorrhage "
                f"Lab's ({found}). It was left untouched; pass another --db for the results."
            )
        for sql in SCHEMA:
            con.execute(sql)

    # -- the choke point ---------------------------------------------------------------------------------
    def _run(self, work: Callable[[duckdb.DuckDBPyConnection], Any]) -> Any:
        """Open (or reuse, for :memory:) a connection, run `work(con)`, close; retry while the file is locked."""
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                with self._lock:
                    if self._memory:  # a :memory: store keeps its one connection, opened in __init__
                        assert self._memory_con is not None
                        return work(self._memory_con)
                    con = duckdb.connect(self.path)
                    try:
                        return work(con)
                    finally:
                        con.close()
            except duckdb.Error as exc:
                text = str(exc).lower()
                if any(m in text for m in LOCK_MARKERS):
                    if time.monotonic() > deadline:
                        raise StoreError(
                            f"the results database {self.path} stayed locked by another process for "
                            f"{self.lock_timeout_s:.0f} s; try again when it finishes, or pass another --db"
                        ) from exc
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                if isinstance(exc, duckdb.ConstraintException):
                    raise
                raise StoreError(
                    f"cannot use the results database {self.path}: {exc}. The file was left untouched; "
                    "move it aside or pass another --db to start a fresh one"
                ) from exc

    def _query(self, sql: str, params: Iterable[Any] = ()) -> pd.DataFrame:
        return self._run(lambda con: con.execute(sql, list(params)).df())

    # -- writes ---------------------------------------------------------------------------------------------
    def save_run(
        self,
        *,
        run_key: str,
        run_row: dict[str, Any],
        metrics: dict[str, float],
        layers: pd.DataFrame,
        heads: pd.DataFrame,
        kl_hist: pd.DataFrame,
    ) -> bool:
        """Write one run atomically. Returns False if the key was already stored (by us or another process)."""

        def write(con):
            con.execute("BEGIN TRANSACTION")
            try:
                if con.execute("SELECT 1 FROM runs WHERE run_key = ?", [run_key]).fetchone():
                    con.execute("ROLLBACK")
                    return False
                cols = list(run_row)
                con.execute(
                    f"INSERT INTO runs (run_key, {', '.join(cols)}) VALUES (?{', ?' * len(cols)})",
                    [run_key, *run_row.values()],
                )
                con.executemany(
                    "INSERT INTO metrics VALUES (?, ?, ?)",
                    [[run_key, k, float(v)] for k, v in metrics.items()],
                )
                if not layers.empty:
                    con.executemany(
                        "INSERT INTO layer_metrics VALUES (?, ?, ?, ?)",
                        [[run_key, int(r.layer), r.metric, float(r.value)] for r in layers.itertuples()],
                    )
                if not heads.empty:
                    con.executemany(
                        "INSERT INTO head_metrics VALUES (?, ?, ?, ?, ?)",
                        [
                            [run_key, int(r.layer), int(r.head), r.metric, float(r.value)]
                            for r in heads.itertuples()
                        ],
                    )
                if not kl_hist.empty:
                    con.executemany(
                        "INSERT INTO distributions VALUES (?, 'kl', ?, ?, ?)",
                        [
                            [run_key, float(r.bin_lo), float(r.bin_hi), int(r.count)]
                            for r in kl_hist.itertuples()
                        ],
                    )
                con.execute("COMMIT")
                return True
            except BaseException:
                con.execute("ROLLBACK")
                raise

        try:
            return self._run(write)
        except duckdb.ConstraintException:
            return False  # another process committed the same run between our check and our insert

    def delete_runs(self, run_keys: Iterable[str]) -> int:
        keys = list(run_keys)
        if not keys:
            return 0

        def delete(con):
            marks = ", ".join("?" * len(keys))
            con.execute("BEGIN TRANSACTION")
            # Counted inside the transaction: keys that name no run are not reported as deleted.
            (found,) = con.execute(f"SELECT count(*) FROM runs WHERE run_key IN ({marks})", keys).fetchone()
            for table in (*CHILD_TABLES, "runs"):
                con.execute(f"DELETE FROM {table} WHERE run_key IN ({marks})", keys)
            con.execute("COMMIT")
            return int(found)

        return self._run(delete)

    # -- reads ----------------------------------------------------------------------------------------------
    def has_run(self, run_key: str) -> bool:
        return not self._query("SELECT 1 FROM runs WHERE run_key = ?", [run_key]).empty

    def load_run(self, run_key: str) -> StoredRun | None:
        def read(con):
            row = con.execute("SELECT * FROM runs WHERE run_key = ?", [run_key]).df()
            if row.empty:
                return None
            metrics = con.execute("SELECT name, value FROM metrics WHERE run_key = ?", [run_key]).fetchall()
            layers = con.execute(
                "SELECT layer, metric, value FROM layer_metrics WHERE run_key = ? ORDER BY metric, layer",
                [run_key],
            ).df()
            heads = con.execute(
                "SELECT layer, head, metric, value FROM head_metrics WHERE run_key = ? ORDER BY metric, layer, head",
                [run_key],
            ).df()
            hist = con.execute(
                "SELECT bin_lo, bin_hi, count FROM distributions WHERE run_key = ? AND name = 'kl' ORDER BY bin_lo",
                [run_key],
            ).df()
            return StoredRun(run_key, row.iloc[0].to_dict(), dict(metrics), layers, heads, hist)

        return self._run(read)

    def runs(self, model: str | None = None) -> pd.DataFrame:
        """All runs with their headline metrics as columns, newest first."""
        where, params = ("WHERE r.model = ?", [model]) if model else ("", [])
        df = self._query(
            f"""SELECT r.run_key, r.model, r.label, r.corpus, r.corpus_sha256, r.window_tokens, r.token_budget,
                       r.created_at, r.wall_s, r.spec_json, m.name, m.value
                FROM runs r LEFT JOIN metrics m USING (run_key) {where}""",
            params,
        )
        if df.empty:
            return df.drop(columns=["name", "value"])
        index = [c for c in df.columns if c not in ("name", "value")]
        wide = df.pivot_table(index=index, columns="name", values="value", aggfunc="first").reset_index()
        wide.columns.name = None
        return wide.sort_values("created_at", ascending=False, ignore_index=True)

    def layer_metrics(self, run_keys: Iterable[str]) -> pd.DataFrame:
        keys = list(run_keys)
        if not keys:
            return pd.DataFrame(columns=["run_key", "layer", "metric", "value"])
        marks = ", ".join("?" * len(keys))
        return self._query(
            f"SELECT run_key, layer, metric, value FROM layer_metrics WHERE run_key IN ({marks}) ORDER BY run_key, layer",
            keys,
        )

    # -- sweeps and on-demand analyses (additive) -------------------------------------------------------------
    def save_sweep(self, summary: dict[str, Any], created_at) -> None:
        """Store (or replace) one sweep summary: `SweepSummary.to_dict()` output."""
        points = summary["points"]
        row = [
            summary["sweep_id"],
            summary["model"],
            summary["param"],
            json.dumps([p["value"] for p in points], default=str),
            json.dumps([p["run_key"] for p in points]),
            json.dumps(summary, default=str),
            created_at,
        ]

        def write(con):
            con.execute("BEGIN TRANSACTION")
            con.execute("DELETE FROM sweeps WHERE sweep_id = ?", [row[0]])
            con.execute("INSERT INTO sweeps VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            con.execute("COMMIT")

        self._run(write)

    def sweeps(self, model: str | None = None, param: str | None = None) -> list[dict[str, Any]]:
        """Stored sweep summaries (dicts as saved), newest first, optionally for one model and/or knob."""
        clauses, params = [], []
        for column, value in (("model", model), ("param", param)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        df = self._query(
            f"SELECT summary_json, created_at FROM sweeps {where} ORDER BY created_at DESC", params
        )
        return [
            json.loads(s) | {"created_at": str(t)}
            for s, t in zip(df.summary_json, df.created_at, strict=True)
        ]

    def save_analysis(self, run_key: str, analysis: str, rows: Iterable[tuple[str, str, float]]) -> None:
        """Replace the stored rows (item, metric, value) of one analysis of one run."""
        data = [[run_key, analysis, str(item), str(metric), float(value)] for item, metric, value in rows]

        def write(con):
            con.execute("BEGIN TRANSACTION")
            con.execute(
                "DELETE FROM analysis_results WHERE run_key = ? AND analysis = ?", [run_key, analysis]
            )
            if data:
                con.executemany("INSERT INTO analysis_results VALUES (?, ?, ?, ?, ?)", data)
            con.execute("COMMIT")

        self._run(write)

    def save_analysis_frame(self, run_key: str, analysis: str, frame: pd.DataFrame) -> None:
        """Replace the stored rows of one analysis of one run from a frame with columns item, metric, value.

        For tens of thousands of rows (per-item task scores): one INSERT from the frame, where executemany would
        take seconds."""
        data = pd.DataFrame(
            {
                "run_key": run_key,
                "analysis": analysis,
                "item": frame["item"].astype(str),
                "metric": frame["metric"].astype(str),
                "value": frame["value"].astype(float),
            }
        )

        def write(con):
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(
                    "DELETE FROM analysis_results WHERE run_key = ? AND analysis = ?", [run_key, analysis]
                )
                con.register("hemlab_rows", data)
                con.execute("INSERT INTO analysis_results SELECT * FROM hemlab_rows")
                con.unregister("hemlab_rows")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

        self._run(write)

    def analysis_rows(self, run_keys: Iterable[str], prefix: str) -> pd.DataFrame:
        """Stored rows of every analysis whose name starts with `prefix`, for several runs: run_key, analysis,
        item, metric, value."""
        keys = list(run_keys)
        if not keys:
            return pd.DataFrame(columns=["run_key", "analysis", "item", "metric", "value"])
        marks = ", ".join("?" * len(keys))
        return self._query(
            f"SELECT run_key, analysis, item, metric, value FROM analysis_results WHERE run_key IN ({marks}) "
            "AND starts_with(analysis, ?) ORDER BY run_key, analysis, item, metric",
            [*keys, prefix],
        )

    def analysis(self, run_key: str, analysis: str) -> pd.DataFrame:
        """Stored rows of one analysis of one run: columns item, metric, value (empty when never computed)."""
        return self._query(
            "SELECT item, metric, value FROM analysis_results WHERE run_key = ? AND analysis = ? ORDER BY item, metric",
            [run_key, analysis],
        )


def spec_from_row(row: dict[str, Any]) -> dict[str, Any]:
    return json.loads(row["spec_json"])
