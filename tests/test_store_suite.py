"""The store contract, checked on both engines: SQLite files in a temporary folder, and a
PostgreSQL database made for the test (and dropped after it)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from lienthong.config import RetrySettings, StoreSettings
from lienthong.devnet.pgdb import ScratchDatabase
from lienthong.store import (
    DigestMismatch,
    FailOutcome,
    IllegalTransition,
    PackageMeta,
    PackageState,
    Receipt,
    ReceiveOutcome,
    SqliteStore,
    Store,
    TransferState,
    UnknownId,
    WrongPeer,
)
from lienthong.store.postgres import PostgresStore
from lienthong.store.sqlstore import Op, SqlStore, Tx

T0 = 1_700_000_000.0
SETTINGS = StoreSettings(
    lease_s=30,
    package_max_age_s=1000,
    retry=RetrySettings(
        base_delay_s=10, factor=2, max_delay_s=100, jitter=0.1, max_attempts=3, max_age_s=500
    ),
)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh store: SQLite in a temporary folder, or PostgreSQL in a new database."""
    if request.param == "sqlite":
        async with SqliteStore(tmp_path / "state", SETTINGS, random.Random(1)) as s:
            yield s
        return
    async with ScratchDatabase("lienthong_suite") as db:
        settings = replace(SETTINGS, backend="postgresql", dsn=db.dsn)
        async with PostgresStore(tmp_path / "state", settings, random.Random(1)) as p:
            yield p


def pkg(n: int = 1, recipients: tuple[str, ...] = ("000.00.12.H30",)) -> tuple[bytes, PackageMeta]:
    """Package bytes and their metadata."""
    data = f"<edXML>package {n}</edXML>".encode() * 10
    return data, PackageMeta.for_bytes(data, f"doc-{n}", "edoc", "000.00.00.H49", recipients)


async def routed(store: Store, n: int = 1, hops: tuple[str, ...] = ("000.00.00.H30",)) -> list[str]:
    """A package put and routed; its transfer ids."""
    data, meta = pkg(n)
    pid, _ = await store.put_package(data, meta, T0)
    return await store.enqueue(pid, {h: meta.recipients for h in hops}, T0)


async def test_put_package_stores_once_and_reports_duplicate(store: Store) -> None:
    """The same bytes stored twice are one package; the second call says duplicate."""
    data, meta = pkg()
    first = await store.put_package(data, meta, T0)
    second = await store.put_package(data, meta, T0 + 1)
    assert first == (meta.sha256, False)
    assert second == (meta.sha256, True)
    assert await store.read_package(meta.sha256) == data
    assert (await store.get_package(meta.sha256)).state == PackageState.STORED


async def test_put_package_refuses_wrong_digest(store: Store) -> None:
    """Bytes that do not match their announced sha256 are refused, not stored."""
    data, meta = pkg()
    with pytest.raises(DigestMismatch, match="sha256"):
        await store.put_package(data + b"x", replace(meta, size=meta.size + 1), T0)
    with pytest.raises(UnknownId):
        await store.get_package(meta.sha256)


async def test_illegal_transition_names_both_states(store: Store) -> None:
    """Moving a package where its life cycle does not go raises, naming from and to."""
    data, meta = pkg()
    await store.put_package(data, meta, T0)
    with pytest.raises(IllegalTransition, match="stored -> delivered"):
        await store.inbox_add(meta.sha256, ["000.00.12.H30"], T0)
    assert (await store.get_package(meta.sha256)).state == PackageState.STORED


async def test_lease_counts_attempt_and_hides_transfer(store: Store) -> None:
    """A leased transfer counts its attempt and is not leased again while the lease holds."""
    (tid,) = await routed(store)
    lease = await store.lease_transfer(None, T0)
    assert lease is not None
    assert lease.transfer_id == tid
    assert lease.attempt == 1
    assert await store.lease_transfer(None, T0 + 1) is None


async def test_expired_lease_is_taken_again(store: Store) -> None:
    """A worker that dies holding a lease loses it when it runs out; the next take counts 2."""
    (tid,) = await routed(store)
    first = await store.lease_transfer(None, T0)
    assert first is not None
    again = await store.lease_transfer(None, T0 + SETTINGS.lease_s + 1)
    assert again is not None
    assert again.transfer_id == tid
    assert again.attempt == 2
    assert (await store.fail(first, "late", T0 + 40)).outcome == FailOutcome.STALE


async def test_lease_filters_by_next_hop(store: Store) -> None:
    """Leasing for one next hop leaves the other hops' transfers alone."""
    await routed(store, hops=("000.00.00.H30", "000.00.00.H31"))
    lease = await store.lease_transfer("000.00.00.H31", T0)
    assert lease is not None
    assert lease.next_hop == "000.00.00.H31"
    assert await store.lease_transfer("000.00.00.H31", T0) is None


async def test_concurrent_takers_never_take_one_transfer_twice(store: Store) -> None:
    """Senders taking transfers at once, while earlier takes are being committed, each get a
    transfer of their own: a take committed during another's read is not taken again."""
    hops = tuple(f"000.00.00.H{n:02d}" for n in range(30, 34))
    for n in range(60):
        await routed(store, n, hops=(hops[n % len(hops)],))

    async def taker(hop: str) -> list[str]:
        taken = []
        while (lease := await store.lease_transfer(hop, T0)) is not None:
            taken.append(lease.transfer_id)
        return taken

    results = await asyncio.gather(*(taker(hop) for hop in hops for _ in range(4)))
    taken = [tid for each in results for tid in each]
    assert len(taken) == 60
    assert len(set(taken)) == 60
    assert await store.resume_intake()  # a write: it lands after the takes handed over before
    assert (await store.queue_summary(T0)).transfers == {TransferState.IN_FLIGHT: 60}


async def test_transfer_moved_elsewhere_is_not_taken_from_rows_read_ahead(store: Store) -> None:
    """After a take has read further transfers ahead, one of them re-routed to another hop
    is not taken for the first hop; the others are, each once."""
    hop, other = "000.00.00.H30", "000.00.00.H31"
    tids = [(await routed(store, n, hops=(hop,)))[0] for n in range(4)]
    first = await store.lease_transfer(hop, T0)
    assert first is not None
    moved = next(t for t in tids if t != first.transfer_id)
    assert await store.reroute(moved, [], {other: ("000.00.12.H30",)}, T0) is not None
    taken = [first.transfer_id]
    while (lease := await store.lease_transfer(hop, T0)) is not None:
        taken.append(lease.transfer_id)
    assert sorted(taken) == sorted(t for t in tids if t != moved)
    again = await store.lease_transfer(other, T0)
    assert again is not None
    assert again.transfer_id not in tids


async def test_ack_completes_transfer_and_package(store: Store) -> None:
    """The hop receipt acknowledges the transfer, is recorded, and finishes the package."""
    (tid,) = await routed(store)
    lease = await store.lease_transfer(None, T0)
    assert lease is not None
    assert await store.ack(tid, lease.sha256, T0 + 1) is True
    assert await store.ack(tid, lease.sha256, T0 + 2) is False
    assert (await store.get_package(lease.package_id)).state == PackageState.DONE
    hops = [r for r in await store.receipts("doc-1") if r.level == "hop"]
    assert [(r.code, r.by) for r in hops] == [("stored", "000.00.00.H30")]


async def test_receipts_of_one_frame_are_recorded_together_each_on_its_own(
    store: Store,
) -> None:
    """Hop receipts recorded in one operation: each acknowledges its transfer, and one that is
    refused (unknown transfer, other digest, already acknowledged) changes nothing for the
    others."""
    tids = [(await routed(store, n))[0] for n in range(3)]
    leases = [await store.lease_transfer(None, T0) for _ in tids]
    sha = {lease.transfer_id: lease.sha256 for lease in leases if lease is not None}
    assert sorted(sha) == sorted(tids)
    first, second, third = tids
    assert await store.ack(first, sha[first], T0 + 1) is True
    outcomes = await store.ack_many(
        [
            (first, sha[first]),
            ("f" * 32, sha[second]),
            (second, sha[second]),
            (third, "0" * 64),
        ],
        T0 + 2,
        by="000.00.00.H30",
    )
    assert outcomes[0] is False
    assert isinstance(outcomes[1], UnknownId)
    assert outcomes[2] is True
    assert isinstance(outcomes[3], DigestMismatch)
    (stranger,) = await store.ack_many([(third, sha[third])], T0 + 3, by="000.00.00.H99")
    assert isinstance(stranger, WrongPeer)
    summary = await store.queue_summary(T0 + 3)
    assert summary.transfers == {TransferState.ACKED: 2, TransferState.IN_FLIGHT: 1}
    assert (await store.journal_verify()).ok


async def test_ack_with_other_digest_is_refused(store: Store) -> None:
    """A hop receipt naming another digest does not acknowledge the transfer."""
    (tid,) = await routed(store)
    with pytest.raises(DigestMismatch):
        await store.ack(tid, "0" * 64, T0)
    assert (await store.queue_summary(T0)).transfers == {TransferState.QUEUED: 1}


async def test_retry_schedule_then_dead_letter_then_requeue(store: Store) -> None:
    """Failures retry with growing delays, dead-letter after max attempts, and requeue revives."""
    (tid,) = await routed(store)
    now = T0
    delays = []
    for attempt in range(1, 4):
        lease = await store.lease_transfer(None, now)
        assert lease is not None
        assert lease.attempt == attempt
        result = await store.fail(lease, f"broker down {attempt}", now)
        if attempt < 3:
            assert result.outcome == FailOutcome.RETRY
            assert result.next_attempt_at is not None
            assert await store.lease_transfer(None, result.next_attempt_at - 0.01) is None
            delays.append(result.next_attempt_at - now)
            now = result.next_attempt_at
        else:
            assert result.outcome == FailOutcome.DEAD
    assert 9 <= delays[0] <= 11
    assert 18 <= delays[1] <= 22
    (dead,) = await store.dead_letters()
    assert dead.id == tid
    assert "broker down 3" in dead.reason
    assert dead.attempts == 3
    assert await store.requeue(tid, now) == 1
    assert await store.dead_letters() == []
    lease = await store.lease_transfer(None, now)
    assert lease is not None
    assert lease.attempt == 1


async def test_retry_stops_at_max_age(store: Store) -> None:
    """A retry that would start past the maximum age dead-letters the transfer instead."""
    await routed(store)
    lease = await store.lease_transfer(None, T0 + 495)
    assert lease is not None
    assert (await store.fail(lease, "timeout", T0 + 495)).outcome == FailOutcome.DEAD


async def test_requeue_unknown_or_live_id_is_an_error(store: Store) -> None:
    """Requeue of an id that is not a dead letter says so."""
    (tid,) = await routed(store)
    with pytest.raises(UnknownId, match="not dead"):
        await store.requeue(tid, T0)
    with pytest.raises(UnknownId, match="no dead transfer"):
        await store.requeue("nope", T0)


async def test_expire_dead_letters_old_packages_and_requeue_all(store: Store) -> None:
    """Packages past their maximum age are dead-lettered with their transfers, never deleted."""
    (tid,) = await routed(store)
    data, meta = pkg(2)
    await store.put_package(data, meta, T0)
    expired = await store.expire(T0 + 1001)
    assert set(expired.packages) == {meta.sha256, pkg(1)[1].sha256}
    assert expired.transfers == (tid,)
    kinds = sorted((d.kind, "expired" in d.reason) for d in await store.dead_letters())
    assert kinds == [("package", True), ("package", True), ("transfer", True)]
    assert await store.read_package(meta.sha256) == data
    assert await store.requeue(None, T0 + 1002) == 2
    assert (await store.get_package(meta.sha256)).state == PackageState.STORED
    assert (await store.get_package(pkg(1)[1].sha256)).state == PackageState.ROUTED


async def test_receive_dedupes_by_transfer_and_digest(store: Store) -> None:
    """A transfer received again is a duplicate, and so is the same package in a new transfer."""
    data, meta = pkg()
    first = await store.receive("t1", data, meta, "000.00.00.H49", T0)
    again = await store.receive("t1", data, meta, "000.00.00.H49", T0 + 1)
    other = await store.receive("t2", data, meta, "000.00.00.H49", T0 + 2)
    assert [first.outcome, again.outcome, other.outcome] == [
        ReceiveOutcome.NEW,
        ReceiveOutcome.DUPLICATE,
        ReceiveOutcome.DUPLICATE,
    ]
    assert (await store.queue_summary(T0)).duplicates_suppressed == 2
    assert len(await store.packages(PackageState.STORED)) == 1


async def test_receive_conflict_is_kept_and_reported(store: Store) -> None:
    """The same transfer id with other bytes is a conflict: kept in quarantine and listed."""
    data, meta = pkg(1)
    data2, meta2 = pkg(2)
    await store.receive("t1", data, meta, "000.00.00.H49", T0)
    result = await store.receive("t1", data2, meta2, "000.00.00.H49", T0 + 1)
    assert result.outcome == ReceiveOutcome.CONFLICT
    assert result.package_id == meta.sha256
    (conflict,) = await store.conflicts()
    assert (conflict.stored_sha256, conflict.other_sha256) == (meta.sha256, meta2.sha256)
    assert (await store.queue_summary(T0)).conflicts == 1
    with pytest.raises(UnknownId):
        await store.get_package(meta2.sha256)


async def test_inbox_delivery_retrieval_and_receipts(store: Store) -> None:
    """A verified package goes to the inbox; retrieval is recorded and finishes the package."""
    data, meta = pkg()
    await store.receive("t1", data, meta, "000.00.00.H49", T0)
    await store.set_package_state(meta.sha256, PackageState.VERIFIED, T0)
    await store.inbox_add(meta.sha256, ["000.00.12.H30"], T0)
    (entry,) = await store.inbox_list("000.00.12.H30")
    await store.record_receipt(Receipt("doc-1", "status", "01", "000.00.12.H30", T0 + 1))
    await store.inbox_ack(entry.entry_id, False, T0 + 2, "disk error")
    assert len(await store.inbox_list()) == 1
    await store.inbox_ack(entry.entry_id, True, T0 + 3)
    assert await store.inbox_list() == []
    assert (await store.get_package(meta.sha256)).state == PackageState.DONE
    got = [(r.level, r.code) for r in await store.receipts("doc-1")]
    assert got == [("status", "01"), ("retrieval", "fail"), ("retrieval", "done")]


async def test_inbox_entry_by_number(store: Store) -> None:
    """An inbox entry is found by its number in any state; an unknown number gives None."""
    data, meta = pkg()
    await store.receive("t1", data, meta, "000.00.00.H49", T0)
    await store.set_package_state(meta.sha256, PackageState.VERIFIED, T0)
    await store.inbox_add(meta.sha256, ["000.00.12.H30"], T0)
    (entry,) = await store.inbox_list()
    await store.inbox_ack(entry.entry_id, True, T0 + 1)
    found = await store.inbox_entry(entry.entry_id)
    assert found is not None
    assert (found.document_id, found.recipient, found.state) == ("doc-1", "000.00.12.H30", "done")
    assert await store.inbox_entry(entry.entry_id + 99) is None


async def test_repeated_acknowledgement_changes_nothing(store: Store) -> None:
    """Acknowledging a retrieved entry again (done or fail) is harmless and records nothing."""
    data, meta = pkg()
    await store.receive("t1", data, meta, "000.00.00.H49", T0)
    await store.set_package_state(meta.sha256, PackageState.VERIFIED, T0)
    await store.inbox_add(meta.sha256, ["000.00.12.H30"], T0)
    (entry,) = await store.inbox_list("000.00.12.H30")
    for ok in (True, True, False):
        await store.inbox_ack(entry.entry_id, ok, T0 + 1)
    (after,) = await store.inbox_list(pending=False)
    assert after.state == "done"
    got = [(r.level, r.code) for r in await store.receipts("doc-1")]
    assert got == [("retrieval", "done")]


async def test_revoked_entry_leaves_the_pending_list(store: Store) -> None:
    """Revoking a delivered document hides it from the pending list, keeps it listed as
    revoked, finishes the package, and a second revocation changes nothing."""
    data, meta = pkg()
    await store.receive("t1", data, meta, "000.00.00.H49", T0)
    await store.set_package_state(meta.sha256, PackageState.VERIFIED, T0)
    await store.inbox_add(meta.sha256, ["000.00.12.H30"], T0)
    assert await store.inbox_revoke("doc-1", "000.00.12.H30", T0 + 1, "revoked") == 1
    assert await store.inbox_list() == []
    (entry,) = await store.inbox_list(pending=False)
    assert entry.state == "revoked"
    assert (await store.get_package(meta.sha256)).state == PackageState.DONE
    assert await store.inbox_revoke("doc-1", "000.00.12.H30", T0 + 2) == 0
    await store.inbox_ack(entry.entry_id, True, T0 + 3)  # a late retrieval changes nothing
    assert (await store.inbox_list(pending=False))[0].state == "revoked"
    assert await store.inbox_revoke("doc-unknown", "000.00.12.H30", T0 + 2) == 0


async def test_quarantine_refused_package(store: Store) -> None:
    """A package that fails verification is quarantined with its reason."""
    data, meta = pkg()
    await store.receive("t1", data, meta, "000.00.00.H49", T0)
    await store.set_package_state(meta.sha256, PackageState.QUARANTINED, T0, "bad signature")
    rec = await store.get_package(meta.sha256)
    assert (rec.state, rec.reason, rec.from_peer) == (
        PackageState.QUARANTINED,
        "bad signature",
        "000.00.00.H49",
    )


async def test_hop_receipt_from_another_neighbour_is_refused(store: Store) -> None:
    """Only the neighbour a transfer went to can acknowledge it."""
    (tid,) = await routed(store)
    lease = await store.lease_transfer(None, T0)
    assert lease is not None
    with pytest.raises(WrongPeer, match=r"it was sent to 000\.00\.00\.H30"):
        await store.ack(tid, lease.sha256, T0, by="000.00.00.H99")
    assert await store.ack(tid, lease.sha256, T0, by="000.00.00.H30")


async def test_queue_summary_counts_and_oldest(store: Store) -> None:
    """The summary counts per state and per hop and gives the oldest waiting transfer, for
    the node and for each next hop."""
    (_t1,) = await routed(store, 1)
    await routed(store, 2, hops=("000.00.00.H31",))
    summary = await store.queue_summary(T0 + 60)
    assert summary.transfers == {"queued": 2}
    assert summary.per_hop == {"000.00.00.H30": {"queued": 1}, "000.00.00.H31": {"queued": 1}}
    assert summary.oldest_waiting is not None
    assert summary.oldest_waiting.age_s == 60
    assert summary.oldest_per_hop == {"000.00.00.H30": 60, "000.00.00.H31": 60}
    assert summary.packages == {"routed": 2}


async def test_journal_chains_every_change(store: Store) -> None:
    """Every change is journalled and the chain verifies."""
    (tid,) = await routed(store)
    lease = await store.lease_transfer(None, T0)
    assert lease is not None
    await store.ack(tid, lease.sha256, T0)
    report = await store.journal_verify()
    # stored, routed, queued, in_flight, acked, hop receipt, done
    assert report.ok
    assert report.entries == 7


def _receipt_writer(n: int, *, refuse: bool) -> Op[int]:
    """An operation that records a receipt for doc-``n`` (a row and its journal entry), then
    refuses if told to."""

    def op(tx: Tx) -> int:
        tx.run(
            'INSERT INTO receipts (document_id, level, code, "by", at, detail)'
            " VALUES (?,?,?,?,?,?)",
            (f"doc-{n}", "hop", "stored", "000.00.00.H30", T0, ""),
        )
        tx.log(T0, "receipt", f"doc-{n}", None, "hop stored")
        if refuse:
            raise UnknownId(f"operation {n} refuses after writing")
        return n

    return op


@pytest.mark.parametrize("refused", [None, 1, 2, 3])
async def test_an_operation_refused_in_a_batch_undoes_its_own_writes_only(
    store: Store, refused: int | None
) -> None:
    """Operations committed together: one that writes and then refuses leaves neither rows
    nor journal entries; the others, before and after it, keep theirs; the chain verifies."""
    assert isinstance(store, SqlStore)
    commits = store.commits
    futures = [store._submit(_receipt_writer(n, refuse=n == refused), (), True) for n in (1, 2, 3)]
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert store.commits == commits + 1  # handed over together: one batch
    kept = [n for n in (1, 2, 3) if n != refused]
    for n, outcome in zip((1, 2, 3), outcomes, strict=True):
        if n == refused:
            assert isinstance(outcome, UnknownId)
        else:
            assert outcome == n
    rows = await store._rows("SELECT document_id FROM receipts ORDER BY document_id")
    assert [r[0] for r in rows] == [f"doc-{n}" for n in kept]
    report = await store.journal_verify()
    assert report.ok
    assert report.entries == len(kept)


async def test_an_operation_whose_caller_is_cancelled_while_waiting_still_commits(
    store: Store,
) -> None:
    """A caller cancelled after handing its write over (a link going down mid-transfer, the
    daemon stopping): the write still commits with its batch, and later writes go on."""
    data, meta = pkg()
    putting = asyncio.ensure_future(store.put_package(data, meta, T0))
    await asyncio.sleep(0)  # handed over to the writer, not yet committed
    putting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await putting
    assert isinstance(store, SqlStore)
    commits = store.commits
    [transfer] = await store.enqueue(meta.sha256, {"000.00.00.H30": meta.recipients}, T0)
    assert store.commits > commits
    assert (await store.get_package(meta.sha256)).state == PackageState.ROUTED
    lease = await store.lease_transfer("000.00.00.H30", T0)
    assert lease is not None
    assert lease.transfer_id == transfer
    assert (await store.journal_verify()).ok
