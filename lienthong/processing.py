"""What a node does with a package: take one from office software, or act on one received.

Submission (office software -> this node)::

    validate -> refuse with every problem | sign (unless signed) -> store -> route
    route: local recipients -> inbox; others -> one transfer per next hop

A package whose recipients cannot all be routed is refused at submission, before anything is
stored or sent: the office software learns it at once, not through a status 02 later.

Reception (a neighbour -> this node, already durably stored and answered with a hop receipt)::

    recipients served here?  yes -> verify signature + validate -> inbox, status 01 back
                                                               | quarantine, status 02 back
                             others -> one transfer per next hop

A package only passing through (:meth:`Processor.transit_hops` gives its next hops: no
recipient here, every one routable) never reaches the processor: the receiver stores and routes
it in one commit without reading it; the digest, checked on reassembly, proves the bytes, and
the destination verifies the signature.

A refused package is quarantined as a whole even when other recipients lie further on: its
signature or content is what failed, and it would fail the same way there. Status packages
are never answered with status packages. Every step is a state change in the store, so a
node that restarts resumes packages where they stopped (:meth:`Processor.resume`).

CPU-heavy steps (validation, signing, verification) run in a worker thread so the event loop
keeps serving the links meanwhile.

Large packages (over :data:`~lienthong.edxml.streamed.LARGE_PACKAGE`) are never read whole:
submitted as a file, they are validated in pieces (:func:`validate_file`), signed from file to
file (:func:`sign_file`) and the signed file handed to the store, which adopts it; stored in a
file, they are validated and verified (:func:`verify_file`) from it. Smaller ones are read into
memory, which is faster for them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lienthong import business, receipts
from lienthong.directory import Directory
from lienthong.dirholder import DirectoryHolder, fixed
from lienthong.edxml import EdocPackage, Package, StatusPackage, build, validate
from lienthong.edxml.model import Organization
from lienthong.edxml.streamed import LARGE_PACKAGE, validate_file
from lienthong.edxml.validate import Problem, ValidationResult
from lienthong.errors import LienthongError, PeerInputError
from lienthong.logs import get_logger
from lienthong.metrics import Metrics, RefusalReason
from lienthong.routing import split_by_next_hop
from lienthong.store import PackageMeta, PackageSource, PackageState, Receipt, Reply, Store
from lienthong.store.blobs import file_digest
from lienthong.store.model import OpenTransfer, PackageRecord, Rerouted
from lienthong.trust import (
    SigningIdentity,
    TrustStore,
    Verification,
    VerifyPolicy,
    sign_file,
    sign_package,
    verify_file,
    verify_package,
)
from lienthong.trust.pki import common_name
from lienthong.xmlwork import off_loop

_log = get_logger("lienthong.processing")

TransitHops = Mapping[str, tuple[str, ...]]
"""Next hop -> the recipients reached through it, of a package passing through."""
MAX_TRANSIT_ANSWERS = 4096
"""Recipient lists whose transit hops are kept (per directory in force)."""


class SubmissionRefused(PeerInputError):
    """A package from office software that cannot be sent; ``problems`` says why, each."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("the package was refused: " + "; ".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class Submitted:
    """What became of a submitted package."""

    package_id: str
    document_id: str
    kind: str
    duplicate: bool
    local: tuple[str, ...] = ()
    hops: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Checked:
    """A stored package read back: the package (None: unreadable), its problems (errors,
    and the signature's reasons when it was checked and refused)."""

    package: Package | None
    problems: tuple[str, ...]
    signature_refused: bool
    forged: tuple[str, ...] = ()
    """Why the frame that brought it cannot be believed for delivery here (none: empty)."""


Replace = Callable[
    [str, Sequence[str], Mapping[str, Sequence[str]], float, str], Awaitable[Rerouted | None]
]
"""The store's re-routing of one transfer: ``(transfer_id, local, hops, now, detail)``."""


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """The sha256 fingerprint (lower-case hex) the directory lists signers by."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _deviation_fields(deviations: Sequence[Problem]) -> dict[str, list[str]]:
    """Log fields for a package's deviations: none when it has none."""
    return {"deviations": [f"{d} [{d.kind}]" for d in deviations]} if deviations else {}


def _frame_disagreement(
    kind: str, local: Sequence[str], pkg: Package, resolve: Callable[[str], str]
) -> list[str]:
    """Why the frame that brought ``pkg`` cannot be believed for delivery here (none: empty).

    The frame names the kind and the recipients for this hop; only the signed package says
    what it is and whom its sender wrote to (a renamed code it names, through ``resolve``,
    names the new code too).
    """
    problems = []
    if kind != pkg.kind:
        problems.append(f"the frame says {kind!r}, the signed package is {pkg.kind!r}")
    named = set(_recipients_of(pkg))
    named |= {resolve(code) for code in named}
    problems += [
        f"the frame addresses {code}, whom the signed package does not name"
        for code in local
        if code not in named
    ]
    return problems


def _status_receipt(status: StatusPackage, now: float) -> Receipt:
    """The receipt a status package delivered here records for its document."""
    return Receipt(
        status.document_id,
        "status",
        status.status_code,
        status.sender,
        now,
        status.description or "",
    )


def _recipients_of(pkg: Package) -> tuple[str, ...]:
    """Who a package goes to: the To list, or for a status the document's sender."""
    if isinstance(pkg, StatusPackage):
        return (pkg.response_for.organ_id,)
    return pkg.recipients


class Processor:
    """Submission, routing and reception of packages at node ``me``."""

    def __init__(
        self,
        *,
        me: str,
        directory: Directory | DirectoryHolder,
        identity: SigningIdentity,
        trust: TrustStore,
        store: Store,
        verify_policy: VerifyPolicy | None = None,
        max_package_bytes: int = 64 * 1024 * 1024,
        max_age_s: float = 7 * 86400.0,
        clock: Callable[[], float] = time.time,
        on_enqueued: Callable[[Iterable[str]], object] = lambda hops: None,
        metrics: Metrics | None = None,
        strict: bool = False,
        work_dir: Path | None = None,
    ) -> None:
        """``work_dir`` holds large packages being signed (on the store's filesystem, which
        adopts them; by default beside the file submitted). ``strict`` refuses submissions
        that deviate from QCVN 102 (the node's ``[validation] mode``); reception is always
        lenient, as the axis is. ``on_enqueued(next_hops)`` is called after transfers are
        queued, to wake senders;
        ``max_age_s`` is the store's package age limit, named in expiry notices; ``metrics``
        counts submissions, deliveries, refusals, signature checks and status 01 latencies.
        ``directory`` is the node's :class:`DirectoryHolder` (read at each use, so a new
        version applies to the next package), or one fixed directory."""
        self.me = me
        self.directories = (
            directory if isinstance(directory, DirectoryHolder) else fixed(directory, clock)
        )
        self.identity = identity
        self.trust = trust
        self.store = store
        self.policy = verify_policy or VerifyPolicy()
        self.max_package_bytes = max_package_bytes
        self.max_age_s = max_age_s
        self.clock = clock
        self.on_enqueued = on_enqueued
        self.metrics = metrics or Metrics()
        self.strict = strict
        # transit_hops per recipient list, for the directory they were computed with.
        self._hops: tuple[Directory | None, dict[tuple[str, ...], TransitHops | None]] = (None, {})
        self.work_dir = work_dir

    @property
    def directory(self) -> Directory:
        """The directory in force."""
        return self.directories.directory

    # -- submission ---------------------------------------------------------------------------

    async def submit(self, data: bytes | Path, *, strict: bool | None = None) -> Submitted:
        """Validate, sign, store and route a package from office software.

        ``data`` is the package, or a file holding it (read in pieces when large; the file is
        left as it is). Raises :class:`SubmissionRefused` with every problem when the package
        has an error (or, when ``strict``, a deviation from QCVN 102; ``None``: the node's
        mode), its sender is not served by this node, or a recipient cannot be routed.
        Submitting the same bytes again is recognised and routes nothing twice
        (``duplicate=True``).
        """
        if isinstance(data, Path):
            if (await asyncio.to_thread(os.stat, data)).st_size > LARGE_PACKAGE:
                return await self._submit_file(data, strict)
            data = await asyncio.to_thread(data.read_bytes)
        result = await off_loop(validate, data, max_bytes=self.max_package_bytes)
        pkg = self._accepted(result, strict)
        signed = data if pkg.signed else await off_loop(sign_package, data, self.identity)
        meta = PackageMeta.for_bytes(
            signed, pkg.document_id, pkg.kind, pkg.sender, _recipients_of(pkg)
        )
        return await self._submitted(signed, meta, pkg, result)

    def _accepted(self, result: ValidationResult, strict: bool | None) -> Package:
        """The package validated, or :class:`SubmissionRefused` with every reason."""
        refusals = result.refusals(strict=self.strict if strict is None else strict)
        if refusals or result.package is None:
            self.metrics.refused("submission", "invalid")
            raise SubmissionRefused([str(p) for p in refusals])
        pkg = result.package
        problems, cause = self._submission_problems(pkg)
        if problems:
            self.metrics.refused("submission", cause)
            raise SubmissionRefused(problems)
        return pkg

    async def _submitted(
        self, signed: PackageSource, meta: PackageMeta, pkg: Package, result: ValidationResult
    ) -> Submitted:
        self.metrics.submitting(pkg.document_id, self.clock())
        submitted = await self._store_and_route(signed, pkg, result.deviations, meta)
        if not submitted.duplicate:
            self.metrics.submitted(pkg.kind, submitted.package_id)
            self.metrics.deviated("submission", submitted.package_id, result.deviations)
        return submitted

    async def _submit_file(self, path: Path, strict: bool | None) -> Submitted:
        """:meth:`submit` of a large package in ``path``, never read whole: validated in
        pieces, signed (unless signed) to a new file, and that file given to the store."""
        checked = await off_loop(validate_file, path, max_bytes=self.max_package_bytes)
        pkg = self._accepted(checked.result, strict)
        folder = self.work_dir or path.parent
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="signed-", suffix=".xml", dir=folder)
        os.close(fd)
        signed = Path(name)
        try:
            if pkg.signed:
                await asyncio.to_thread(shutil.copyfile, path, signed)
            else:
                try:
                    await off_loop(
                        sign_file, path, signed, self.identity, max_bytes=self.max_package_bytes
                    )
                except LienthongError as exc:
                    self.metrics.refused("submission", "invalid")
                    raise SubmissionRefused([str(exc)]) from exc
            digest, size = await asyncio.to_thread(file_digest, signed)
            meta = PackageMeta(
                pkg.document_id, pkg.kind, pkg.sender, _recipients_of(pkg), digest, size
            )
            return await self._submitted(signed, meta, pkg, checked.result)
        finally:
            # Adopted by the store, or not needed: gone either way.
            await asyncio.to_thread(signed.unlink, missing_ok=True)

    def _submission_problems(self, pkg: Package) -> tuple[list[str], RefusalReason]:
        """Why the package cannot be sent from here (none: an empty list), and the
        refusal label that groups them."""
        expired = self.directories.submission_refusal(self.clock())
        if expired is not None:
            return [expired], "other"
        sender = pkg.sender
        if sender not in self.directory:
            return [f"the sending agency {sender} is not in this node's directory"], "other"
        if self.directory.serving_node(sender) != self.me:
            return [f"this node ({self.me}) does not serve the sending agency {sender}"], "other"
        split = split_by_next_hop(self.me, self.directory, _recipients_of(pkg))
        problems = [f"recipient {code}: {why}" for code, why in split.refused.items()]
        return problems, "unknown_recipient"

    async def _store_and_route(
        self,
        signed: PackageSource,
        pkg: Package,
        deviations: Sequence[Problem] = (),
        meta: PackageMeta | None = None,
    ) -> Submitted:
        now = self.clock()
        recipients = _recipients_of(pkg)
        if meta is None:
            assert isinstance(signed, bytes)
            meta = PackageMeta.for_bytes(signed, pkg.document_id, pkg.kind, pkg.sender, recipients)
        package_id, duplicate = await self.store.put_package(signed, meta, now)
        if duplicate:
            _log.info("submission_duplicate", document_id=pkg.document_id, package_id=package_id)
            return Submitted(package_id, pkg.document_id, pkg.kind, True)
        _log.info(
            "package_submitted",
            document_id=pkg.document_id,
            kind=pkg.kind,
            recipients=list(recipients),
            size=meta.size,
            **_deviation_fields(deviations),
        )
        local, hops = await self._route(package_id, pkg, recipients)
        return Submitted(package_id, pkg.document_id, pkg.kind, False, local, hops)

    async def _route(
        self, package_id: str, pkg: Package, recipients: Sequence[str]
    ) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
        """Deliver to local recipients and queue one transfer per next hop for the others.

        The caller has checked the package's signature and content (or made them here).
        Returns the local recipients and the hops. Unroutable recipients of a received edoc
        are answered with a status 02 from this node.
        """
        now = self.clock()
        split = split_by_next_hop(self.me, self.directory, recipients)
        local = tuple(split.local)
        if local:
            await self._deliver(package_id, pkg, local)
        hops = {hop: tuple(rs) for hop, rs in split.by_hop.items()}
        if hops:
            await self.store.enqueue(package_id, hops, now)
            _log.debug("package_routed", document_id=pkg.document_id, hops=hops)
            self.on_enqueued(hops)
        if split.refused:
            reasons = await self._unroutable(pkg, split.refused)
            if not local and not hops:
                await self.store.set_package_state(
                    package_id, PackageState.QUARANTINED, now, "; ".join(reasons)
                )
        return local, hops

    async def _unroutable(self, pkg: Package, refused: Mapping[str, str]) -> list[str]:
        """Count, log and (for a document) answer with a status 02 from this node the
        recipients that cannot be routed; the reasons."""
        self.metrics.refused("routing", "unknown_recipient")
        reasons = [f"recipient {code}: {why}" for code, why in refused.items()]
        _log.warning("recipients_refused", document_id=pkg.document_id, reasons=reasons)
        if isinstance(pkg, EdocPackage):
            await self._answer(pkg, self.me, receipts.REFUSED, reasons)
        return reasons

    async def _deliver(self, package_id: str, pkg: Package, local: tuple[str, ...]) -> None:
        """Deliver to the ``local`` recipients; a document's status 01 from each is signed
        first and stored (queued, or delivered here) in the same commit as the delivery, so
        no stop can deliver a document without its status 01."""
        now = self.clock()
        if isinstance(pkg, StatusPackage):
            receipt = _status_receipt(pkg, now)
            await self.store.deliver(package_id, local, now, receipt=receipt)
            self._delivered(pkg, local)
            self.metrics.status_arrived(pkg.document_id, pkg.status_code, now)
            return
        assert isinstance(pkg, EdocPackage)
        answers = await self._carry_out(pkg, local, now)
        replies: list[tuple[Reply, StatusPackage, str]] = []
        unroutable: list[str] = []
        for recipient in local:
            made = await self._reply(pkg, recipient, receipts.ARRIVED, (), now)
            if made is None:
                unroutable.append(recipient)
            elif made is not False:
                replies.append((*made, recipient))
        await self.store.deliver(package_id, local, now, [reply for reply, _, _ in replies])
        self._delivered(pkg, local)
        for reply, status, recipient in replies:
            if reply.local:
                self._delivered(status, reply.local)
                self.metrics.status_arrived(status.document_id, status.status_code, now)
            if reply.hops:
                self.on_enqueued(reply.hops)
            _log.info(
                "status_sent",
                document_id=pkg.document_id,
                status=status.status_code,
                reporter=recipient,
            )
        for recipient in unroutable:  # rare: refused on the way back, as any package is
            await self._answer(pkg, recipient, receipts.ARRIVED, ())
        await self._answer_requests(pkg, answers)

    async def _carry_out(
        self, pkg: Package, local: Sequence[str], now: float
    ) -> dict[str, tuple[str, list[str]]]:
        """Carry out the revoke, update or replace request ``pkg`` makes, for each of
        ``local``; the status and reasons to answer each with after delivery.

        A revoke or replace request is carried out before its own package enters the inbox:
        the official SDK gives such a package the header (so the DocumentId) of the document
        it withdraws, and it must not withdraw itself."""
        request = business.request_of(pkg) if isinstance(pkg, EdocPackage) else None
        return {
            recipient: await self._apply(pkg, request, recipient, now)
            for recipient in local
            if request is not None and isinstance(pkg, EdocPackage)
        }

    async def _answer_requests(
        self, pkg: EdocPackage, answers: Mapping[str, tuple[str, list[str]]]
    ) -> None:
        """Answer each recipient's revoke, update or replace request (15 or 16)."""
        for recipient, (code, reasons) in answers.items():
            await self._answer(pkg, recipient, code, reasons)

    async def _after_delivery(
        self,
        pkg: Package,
        local: Sequence[str],
        answers: Mapping[str, tuple[str, list[str]]],
        now: float,
    ) -> None:
        """``pkg`` entered the inbox of ``local`` by re-routing: count it, record a status
        package's receipt, or answer a document with its status 01 (and ``answers``)."""
        self._delivered(pkg, local)
        if isinstance(pkg, StatusPackage):
            await self.store.record_receipt(_status_receipt(pkg, now))
            self.metrics.status_arrived(pkg.document_id, pkg.status_code, now)
            return
        assert isinstance(pkg, EdocPackage)
        for recipient in local:
            await self._answer(pkg, recipient, receipts.ARRIVED, ())
        await self._answer_requests(pkg, answers)

    def _delivered(self, pkg: Package, local: Sequence[str]) -> None:
        self.metrics.delivered(pkg.kind, len(local))
        _log.info("package_delivered", document_id=pkg.document_id, recipients=list(local))

    async def _reply(
        self, document: EdocPackage, reporter: str, code: str, reasons: Sequence[str], now: float
    ) -> tuple[Reply, StatusPackage] | Literal[False] | None:
        """The signed status ``code`` from ``reporter`` about ``document``, ready to store with
        its route; False when none can be sent (its sender is not in the directory, logged),
        None when its sender cannot be routed (left to :meth:`_answer`, which refuses it)."""
        status = self._status(document, reporter, code, reasons, now)
        if status is None:
            return False
        recipients = _recipients_of(status)
        split = split_by_next_hop(self.me, self.directory, recipients)
        if split.refused:
            return None
        signed = await off_loop(sign_package, build(status), self.identity)
        meta = PackageMeta.for_bytes(
            signed, status.document_id, "status", status.sender, recipients
        )
        local = tuple(split.local)
        reply = Reply(
            signed,
            meta,
            hops={hop: tuple(codes) for hop, codes in split.by_hop.items()},
            local=local,
            receipt=_status_receipt(status, now) if local else None,
        )
        return reply, status

    async def _apply(
        self, pkg: EdocPackage, request: business.Request, recipient: str, now: float
    ) -> tuple[str, list[str]]:
        """Carry out a revoke, update or replace request for ``recipient``; the status (15 or
        16) and reasons to answer."""
        withdrawn = {
            doc: await self.store.inbox_revoke(
                doc, recipient, now, f"{request.kind.name.lower()}d by {pkg.document_id}"
            )
            for doc in request.withdraw
        }
        code, reasons = business.answer(request, withdrawn)
        _log.info(
            "business_request_applied",
            document_id=pkg.document_id,
            request=request.kind.name.lower(),
            recipient=recipient,
            status=code,
            withdrawn=withdrawn,
        )
        return code, list(reasons)

    # -- reception ----------------------------------------------------------------------------

    def transit_hops(self, recipients: Sequence[str]) -> TransitHops | None:
        """The next hops of a package that only passes through here, or None when it must be
        read here (a recipient is served here, or one cannot be routed: refused with a status
        02 from here).

        Asked for every package a neighbour sends, mostly for the same few recipient lists:
        the answers are kept until the directory in force changes (a new version, or the
        aliases of another day)."""
        directory = self.directory
        known, answers = self._hops
        if known is not directory:
            answers = {}
            self._hops = (directory, answers)
        key = tuple(recipients)
        if key in answers:
            return answers[key]
        split = split_by_next_hop(self.me, directory, recipients)
        hops: TransitHops | None = None
        if not (split.local or split.refused or not split.by_hop):
            hops = MappingProxyType({hop: tuple(codes) for hop, codes in split.by_hop.items()})
        if len(answers) < MAX_TRANSIT_ANSWERS:  # recipient lists come from neighbours
            answers[key] = hops
        return hops

    async def process_received(self, package_id: str) -> None:
        """Act on a package a neighbour sent, already stored and acknowledged to it."""
        record = await self.store.get_package(package_id)
        if record.state not in (PackageState.STORED, PackageState.VERIFIED):
            return  # already handled before a restart
        split = split_by_next_hop(self.me, self.directory, record.meta.recipients)
        check = await self._check(record, split.local)
        pkg, problems = check.package, list(check.problems)
        if pkg is not None and check.forged:
            # The frame, not the signed package, is at fault: nobody the package names is
            # told anything (a status would come from an agency the sender never wrote to);
            # the package is kept in quarantine with the reason.
            self.metrics.refused("reception", "invalid")
            await self.store.set_package_state(
                package_id, PackageState.QUARANTINED, self.clock(), "; ".join(check.forged)
            )
            _log.warning(
                "package_quarantined",
                document_id=pkg.document_id,
                from_peer=record.from_peer,
                reasons=list(check.forged),
            )
            return
        if pkg is None or (split.local and problems):
            reason: RefusalReason = "signature" if check.signature_refused else "invalid"
            self.metrics.refused("reception", reason)
            await self._refuse(package_id, record.meta.document_id, pkg, split.local, problems)
            return
        await self._route(package_id, pkg, record.meta.recipients)

    async def _check(self, record: PackageRecord, local: Sequence[str]) -> _Checked:
        """Validate a stored package; when it is for ``local`` (agencies served here), check
        that the signed package names them and is of the kind its frame said (else it is
        ``forged`` and nothing more is checked), and, unless verified already, its signature.
        The deviations of a package to deliver are counted and logged (reception is lenient:
        shown, never refused)."""
        result, source = await self._read_checked(record)
        pkg = result.package
        problems = [str(p) for p in result.problems]
        if pkg is not None and local:
            forged = _frame_disagreement(record.meta.kind, local, pkg, self.directory.resolve)
            if forged:
                return _Checked(pkg, tuple(problems), False, tuple(forged))
        signature_refused = False
        if local and record.state != PackageState.VERIFIED:
            verification = await self._verify(
                source, dt.datetime.fromtimestamp(record.created_at, dt.UTC)
            )
            self.metrics.signature_checked(verification.valid)
            if not verification.valid:
                signature_refused = True
                problems = [*verification.reasons, *problems]
        if local and pkg is not None and not problems and result.deviations:
            self.metrics.deviated("delivery", record.package_id, result.deviations)
            _log.info(
                "package_deviations",
                document_id=pkg.document_id,
                **_deviation_fields(result.deviations),
            )
        return _Checked(pkg, tuple(problems), signature_refused)

    async def _read_checked(self, record: PackageRecord) -> tuple[ValidationResult, PackageSource]:
        """Validate a stored package, from its file in pieces when it is large, else in
        memory: the findings, and the file or bytes that were read."""
        path = None
        if record.meta.size > LARGE_PACKAGE:
            path = await self.store.package_file(record.package_id)
        if path is not None:
            checked = await off_loop(validate_file, path, max_bytes=self.max_package_bytes)
            return checked.result, path
        data = await self.store.read_package(record.package_id)
        return await off_loop(validate, data, max_bytes=self.max_package_bytes), data

    async def _verify(self, source: PackageSource, at: dt.datetime) -> Verification:
        """Check the signature of a package in memory, or in a file read in pieces."""
        if isinstance(source, Path):
            policy = dataclasses.replace(self.policy, max_bytes=self.max_package_bytes)
            return await off_loop(
                verify_file, source, self.trust, at=at, policy=policy, signer_binding=self._may_sign
            )
        return await off_loop(
            verify_package,
            source,
            self.trust,
            at=at,
            policy=self.policy,
            signer_binding=self._may_sign,
        )

    async def _refuse(
        self,
        package_id: str,
        document_id: str,
        pkg: Package | None,
        local: Sequence[str],
        problems: Sequence[str],
    ) -> None:
        reason = "; ".join(problems) or "the package cannot be read"
        await self.store.set_package_state(
            package_id, PackageState.QUARANTINED, self.clock(), reason
        )
        _log.warning("package_quarantined", document_id=document_id, reasons=list(problems))
        if isinstance(pkg, EdocPackage):
            reporter = local[0] if local else self.me
            await self._answer(pkg, reporter, receipts.REFUSED, problems)

    # -- re-routing -----------------------------------------------------------------------------

    async def reroute(self, transfer: OpenTransfer, replace: Replace) -> Rerouted | None:
        """Route the recipients of a queued or dead ``transfer`` as the directory in force
        says, when that differs from its next hop: the ones served here are verified and
        delivered (status 01, or a status package's receipt), the others queued per next
        hop, all by ``replace`` (the store's :meth:`~SqlStore.reroute`: one transaction);
        unroutable ones are answered with a status 02. What ``replace`` did, or None when
        the route is unchanged or the transfer was taken meanwhile.

        When the package does not verify here, the recipients served here are answered with
        a status 02 and not delivered (not answered when the signed package does not name
        them: the frame lied); the others still go on (their nodes check it too).
        """
        split = split_by_next_hop(self.me, self.directory, transfer.recipients)
        if split.only_to(transfer.next_hop):
            return None
        now = self.clock()
        record = await self.store.get_package(transfer.package_id)
        hops = {hop: tuple(rs) for hop, rs in split.by_hop.items()}
        local: tuple[str, ...] = ()
        pkg: Package | None = None
        problems: tuple[str, ...] = ()
        forged = False
        if split.local or split.refused:
            check = await self._check(record, split.local)
            pkg, problems = check.package, check.forged or check.problems
            forged = bool(check.forged)
            if pkg is None:
                _log.error(
                    "transfer_not_rerouted",
                    transfer_id=transfer.transfer_id,
                    reason="; ".join(problems) or "the package cannot be read",
                )
                return None
            local = () if problems else split.local
        answers = await self._carry_out(pkg, local, now) if pkg is not None and local else {}
        detail = "the package verified here" if local else ""
        done = await replace(transfer.transfer_id, local, hops, now, detail)
        if done is None:
            return None
        _log.info(
            "transfer_rerouted",
            transfer_id=transfer.transfer_id,
            document_id=record.meta.document_id,
            old=transfer.next_hop,
            local=list(done.delivered),
            hops=hops,
        )
        if done.transfers:
            self.on_enqueued(done.transfers)
        if pkg is not None and done.delivered:
            await self._after_delivery(pkg, done.delivered, answers, now)
        if pkg is not None and split.local and problems:
            self.metrics.refused("reception", "invalid")
            _log.warning(
                "package_refused_here",
                document_id=pkg.document_id,
                recipients=list(split.local),
                reasons=list(problems),
            )
            # A frame that lied about the package is answered to no one (see reception).
            if isinstance(pkg, EdocPackage) and not forged:
                await self._answer(pkg, split.local[0], receipts.REFUSED, problems)
        if pkg is not None and split.refused:
            await self._unroutable(pkg, split.refused)
        return done

    def _may_sign(self, sender: str, cert: x509.Certificate) -> bool:
        """The signer binding: the directory lists the certificate for ``sender``, or its CN
        is the sender itself or the node that serves the sender (a node signs the status
        packages of the agencies it serves)."""
        if self.directory.may_sign(sender, certificate_fingerprint(cert)):
            return True
        name = common_name(cert)
        if name == sender:
            return True
        return sender in self.directory and self.directory.serving_node(sender) == name

    # -- status packages ----------------------------------------------------------------------

    def _organization(self, code: str) -> Organization:
        agency = self.directory.get(code)
        return Organization(code, agency.name if agency and agency.name else code)

    def _status(
        self, document: EdocPackage, reporter: str, code: str, reasons: Sequence[str], now: float
    ) -> StatusPackage | None:
        """The status ``code`` from ``reporter`` about ``document`` (unsigned), or None when
        its sender is not in the directory (logged: it cannot be sent)."""
        if document.sender not in self.directory:
            _log.warning(
                "status_not_sent",
                document_id=document.document_id,
                status=code,
                reason=f"the sender {document.sender} is not in the directory",
            )
            return None
        return receipts.status_for(
            document, reporter=self._organization(reporter), code=code, reasons=reasons, now=now
        )

    async def _answer(
        self, document: EdocPackage, reporter: str, code: str, reasons: Sequence[str]
    ) -> None:
        """Send a signed status ``code`` about ``document`` from ``reporter`` back to its sender."""
        status = self._status(document, reporter, code, reasons, self.clock())
        if status is None:
            return
        signed = await off_loop(sign_package, build(status), self.identity)
        await self._store_and_route(signed, status)
        _log.info("status_sent", document_id=document.document_id, status=code, reporter=reporter)

    async def answer_expired(self, package_ids: Iterable[str]) -> int:
        """Send a status 02 for each expired document package; how many were answered.

        A package the store dead-lettered by age will not be delivered unless someone requeues
        it; its sender is told, as for any refusal on the way.
        """
        count = 0
        max_age_days = self.max_age_s / 86400
        for package_id in package_ids:
            record = await self.store.get_package(package_id)
            if record.meta.kind != "edoc":
                continue
            pkg = (await self._read_checked(record))[0].package
            if isinstance(pkg, EdocPackage):
                reason = (
                    f"not delivered within {max_age_days:g} days: expired at {self.me}"
                    " (it can be requeued there)"
                )
                await self._answer(pkg, self.me, receipts.REFUSED, [reason])
                count += 1
        return count

    # -- restart ------------------------------------------------------------------------------

    async def resume(self) -> int:
        """Finish packages a previous run stored but did not act on; how many were resumed.

        Stored or verified packages are processed again; a delivered package whose recipients
        elsewhere have no transfer yet (the run stopped between delivering and queueing) is
        queued now. One package that fails is logged and left for the next start.
        """
        count = 0
        for state in (PackageState.STORED, PackageState.VERIFIED, PackageState.DELIVERED):
            for record in await self.store.packages(state):
                try:
                    if await self._resume_one(record):
                        count += 1
                except Exception as exc:  # one package must never stop the start
                    _log.error(
                        "resume_failed",
                        package_id=record.package_id,
                        document_id=record.meta.document_id,
                        reason=str(exc),
                        exc_info=True,
                    )
        return count

    async def _resume_one(self, record: PackageRecord) -> bool:
        if record.state == PackageState.DELIVERED:
            split = split_by_next_hop(self.me, self.directory, record.meta.recipients)
            hops = {hop: tuple(rs) for hop, rs in split.by_hop.items()}
            if not hops:
                return False  # delivered here only: waits for retrieval
            await self.store.enqueue(record.package_id, hops, self.clock())
            self.on_enqueued(hops)
            return True
        if record.from_peer is not None:
            await self.process_received(record.package_id)
            return True
        result = (await self._read_checked(record))[0]
        if result.package is None:
            reasons = [str(p) for p in result.problems]
            await self.store.set_package_state(
                record.package_id, PackageState.QUARANTINED, self.clock(), "; ".join(reasons)
            )
            return True
        await self._route(record.package_id, result.package, record.meta.recipients)
        return True
