"""The tables of the ``postgresql://`` backend, versioned, and how a schema is brought up
to date.

Every app keeps its tables in a PostgreSQL schema of its own (``?schema=NAME``,
default ``pprunner``), so several apps share one database without sharing a
queue. ``<schema>.schema_version`` holds the version of the tables; the first
process to open a schema older than :data:`SCHEMA_VERSION` applies the missing
steps of :data:`MIGRATIONS`, in one transaction under an advisory lock, so
processes starting together migrate once and none sees half a schema.
"""

from __future__ import annotations

from collections.abc import Iterable

from pprunner.invocation import FINAL_STATUSES, OWNED_STATUSES, Status


def in_list(statuses: Iterable[Status]) -> str:
    """``('A', 'B')``: statuses as an SQL list (they are fixed names, not user input)."""
    return "(" + ", ".join(f"'{s.value}'" for s in sorted(statuses)) + ")"


#: SQL for "has ended", as the partial indexes say it (the planner matches it literally)
ENDED = in_list(FINAL_STATUSES)
OWNED = in_list(OWNED_STATUSES)
#: the first key of the advisory lock an ending takes on its invocation's id (the second:
#: ``hashtext(id)``), exclusively, and a caller registering as its waiter, shared. Not a
#: row lock: a claim skips locked rows, and would skip one a waiter had locked.
ENDING_LOCK = "2929"

#: per version, the statements that bring the previous version's tables to it; ``{s}``
#: is the quoted schema. Version 1 makes the tables; a later change of them is a new step,
#: never an edit of an old one (a database of every version may be out there).
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE {s}.invocations (
            seq BIGSERIAL PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            task TEXT NOT NULL,
            serializer TEXT NOT NULL,
            payload BYTEA NOT NULL,
            status TEXT NOT NULL,
            owner TEXT,
            attempts INTEGER NOT NULL,
            max_attempts INTEGER NOT NULL,
            enqueued_at DOUBLE PRECISION NOT NULL,
            started_at DOUBLE PRECISION,
            finished_at DOUBLE PRECISION,
            result BYTEA,
            error TEXT,
            not_before DOUBLE PRECISION,
            history TEXT NOT NULL DEFAULT '[]',
            waiting_for TEXT NOT NULL DEFAULT '[]',
            headers TEXT
        )""",
        # Every status change writes a new row version into each index whose condition
        # it meets: partial indexes, each holding only the rows one kind of query looks
        # for, keep a task's two changes (claim, completion) at three index entries each.
        # the claim's scan: only PENDING rows, in queue order
        "CREATE INDEX invocations_pending ON {s}.invocations (seq) WHERE status = 'PENDING'",
        # reroute, recovery, owned_by: what a runner holds
        f"CREATE INDEX invocations_owner ON {{s}}.invocations (owner) WHERE status IN {OWNED}",
        # ended_since, latest_failures, purge
        f"CREATE INDEX invocations_ended ON {{s}}.invocations (status, finished_at) "
        f"WHERE status IN {ENDED}",
        """CREATE TABLE {s}.runners (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            pid INTEGER NOT NULL,
            host TEXT NOT NULL,
            supervisor TEXT NOT NULL,
            slot INTEGER NOT NULL,
            started_at DOUBLE PRECISION NOT NULL,
            heartbeat_at DOUBLE PRECISION NOT NULL,
            phase TEXT NOT NULL DEFAULT ''
        )""",
        # callers blocked in wait_any: each listens on the schema's endings channel
        # for its own token, recorded here against the invocations it waits for
        """CREATE TABLE {s}.waiters (
            invocation_id TEXT NOT NULL,
            waiter TEXT NOT NULL,
            PRIMARY KEY (invocation_id, waiter)
        )""",
        # A trigger, not the statement that ends an invocation, tells its waiters: each
        # query inside it sees what was committed when it runs. The lock (see
        # ENDING_LOCK) orders it with a waiter's registration: either the waiter
        # registered first, and is told here, or it sees the ending.
        """CREATE FUNCTION {s}.announce_ending() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE told RECORD;
        BEGIN
            PERFORM pg_advisory_xact_lock(""" + ENDING_LOCK + """, hashtext(NEW.id));
            FOR told IN DELETE FROM {s}.waiters WHERE invocation_id = NEW.id RETURNING waiter
            LOOP
                PERFORM pg_notify('pprunner_' || TG_TABLE_SCHEMA || '_ended', told.waiter);
            END LOOP;
            RETURN NULL;
        END $$""",
        f"""CREATE TRIGGER announce_ending AFTER UPDATE OF status ON {{s}}.invocations
        FOR EACH ROW WHEN (NEW.status IN {ENDED} AND OLD.status NOT IN {ENDED})
        EXECUTE FUNCTION {{s}}.announce_ending()""",
    ],
}
SCHEMA_VERSION = max(MIGRATIONS)


def steps_after(version: int) -> list[str]:
    """The statements that bring tables of ``version`` (0: none yet) up to date."""
    return [statement for step in range(version + 1, SCHEMA_VERSION + 1)
            for statement in MIGRATIONS[step]]
