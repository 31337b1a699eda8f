"""The scheduled e-mail digest: the report of the period that just ended, over SMTP.

At each slot of ``reports.digest.schedule`` (a weekday, or every day, at a
time in ``notifications.timezone``) the sidecar makes the report of the
``period`` ending at that slot and mails it to ``recipients``: the report as
the HTML body (the chart as an inline image) and as a PDF attachment.

- **Once per slot, across restarts and replicas**: the store keeps which
  slots are done (:mod:`ai_sidecar.store.digests`), and a sender claims a slot
  before each attempt. Replicas sharing a PostgreSQL store send each digest
  once; if the sender dies mid-way its claim lapses and another replica (or
  the restarted one) takes over. A sidecar that was down at a slot sends it
  when it starts again (the latest missed slot only). The first start with
  the digest enabled only notes the latest past slot: the first digest goes
  out at the next one.
- **Retries**: a failed send (the server answers 4xx, cannot be reached, the
  report cannot be made) is tried again after ``retry.first``, doubling up to
  ``retry.max``, ``retry.attempts`` times in all; then the slot is given up
  (logged) until the next one. A permanent failure (a 5xx answer such as a
  refused login, a missing STARTTLS or AUTH) gives the slot up at once.
  Recipients the server refuses while it accepts others are logged. Every outcome is counted in
  ``scout_reports_digest_sent_total{outcome="sent"|"failed"|"abandoned"}``.
- **Never in the way**: the digest runs as a background task of the HTTP
  process; mail goes out through :mod:`smtplib` on a worker thread, and the
  report's tables are computed off the event loop.
The SMTP password is read from ``smtp.password_file`` at each send (and once
by ``serve`` at start, to refuse an unreadable file) and never logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import smtplib
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from zoneinfo import ZoneInfo

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from ai_sidecar.clock import utc_now
from ai_sidecar.config import WEEKDAYS, DigestConfig, DigestSchedule, SmtpConfig
from ai_sidecar.console.reports.routes import REPORTS, report_filename
from ai_sidecar.console.reports.service import Rendered, ReportMaker
from ai_sidecar.console.reports.tables import period_time, period_title
from ai_sidecar.errors import ConfigError
from ai_sidecar.i18n import translator
from ai_sidecar.keys import CONFIG, METRICS, STORE
from ai_sidecar.pipeline import cancel_tasks
from ai_sidecar.store import Store

log = logging.getLogger("ai_sidecar.reports")

# Room, in a claim, to make the report and its PDF.
CLAIM_MARGIN = timedelta(minutes=5)
OUTCOMES = ("sent", "failed", "abandoned")
# Longest sleep between looks at the clock: a clock set forward is noticed soon.
MAX_NAP = 300.0


def _slots(
    now: datetime, schedule: DigestSchedule, zone: ZoneInfo, step: int
) -> Iterator[datetime]:
    """The scheduled instants, in UTC, of the 8 local days from ``now``'s, going by ``step``.

    In UTC because two datetimes of one zone compare by wall clock, and a local
    time a daylight-saving change skips or repeats compares unequal to any
    datetime of another zone. A skipped local time (02:30 on a spring-forward
    night) is taken with the offset before the change: an hour later by the clock.
    """
    hour, minute = (int(part) for part in schedule.at.split(":"))
    day = now.astimezone(zone).date()
    for _ in range(8):
        if schedule.weekday is None or WEEKDAYS[day.weekday()] == schedule.weekday:
            yield datetime.combine(day, time(hour, minute), tzinfo=zone).astimezone(UTC)
        day += timedelta(days=step)


def latest_slot(now: datetime, schedule: DigestSchedule, zone: ZoneInfo) -> datetime:
    """The last scheduled instant at or before ``now``, in UTC."""
    return next(slot for slot in _slots(now, schedule, zone, -1) if slot <= now)


def next_slot(now: datetime, schedule: DigestSchedule, zone: ZoneInfo) -> datetime:
    """The first scheduled instant after ``now``, in UTC."""
    return next(slot for slot in _slots(now, schedule, zone, 1) if slot > now)


def _sender_domain(sender: str) -> str:
    """The domain of ``from`` (``scout@example.net`` or ``Scout <scout@example.net>``)."""
    return parseaddr(sender)[1].rpartition("@")[2] or "scout.invalid"


def digest_message(rendered: Rendered, config: DigestConfig, at: datetime) -> EmailMessage:
    period = rendered.report.period
    t = translator(rendered.language, "console")
    message = EmailMessage()
    # Date is required (RFC 5322), Message-ID expected: mail without them scores as spam.
    message["Date"] = format_datetime(at.astimezone(UTC))
    message["Message-ID"] = make_msgid(domain=_sender_domain(config.smtp.sender))
    incidents = rendered.report.incidents
    message["Subject"] = t.ngettext(
        "Scout {kind} report to {end}: {count} incident",
        "Scout {kind} report to {end}: {count} incidents",
        incidents,
    ).format(kind=t.gettext(period.kind), end=period_time(period.end, period, t), count=incidents)
    message["From"] = config.smtp.sender
    message["To"] = ", ".join(config.recipients)
    body = t.gettext("The report is attached as a PDF; an HTML view is in this message.")
    message.set_content(f"{period_title(period, t)}\n\n{body}\n")
    chart_id = make_msgid(domain="scout.invalid")
    message.add_alternative(rendered.html(chart_src=f"cid:{chart_id[1:-1]}"), subtype="html")
    html_part = message.get_body(("html",))
    assert html_part is not None  # just added
    html_part.add_related(rendered.chart, maintype="image", subtype="png", cid=chart_id)
    return message


def smtp_password(smtp: SmtpConfig) -> str:
    """The password in ``smtp.password_file`` ("" without one); ConfigError naming the
    file when it cannot be read or is empty. ``serve`` calls it at start too."""
    path = smtp.password_file
    if path is None:
        return ""
    where = "reports.digest.smtp.password_file"
    try:
        password = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{where}: cannot read {path}: {reason}") from None
    if not password:
        raise ConfigError(f"{where}: {path} is empty")
    return password


def send_mail(message: EmailMessage, smtp: SmtpConfig) -> dict[str, tuple[int, bytes]]:
    """Hand ``message`` to the server (blocking: run it on a thread); returns the
    recipients it refused while accepting the others."""
    timeout = smtp.timeout.total_seconds()
    context = ssl.create_default_context()
    client: smtplib.SMTP
    if smtp.security == "tls":
        client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=timeout, context=context)
    else:
        client = smtplib.SMTP(smtp.host, smtp.port, timeout=timeout)
    with client:
        if smtp.security == "starttls":
            client.starttls(context=context)
        if smtp.username:
            client.login(smtp.username, smtp_password(smtp))
        return client.send_message(message)


def _reason(exc: BaseException) -> str:
    """A failure in words, without anything the server echoed back about credentials."""
    if isinstance(exc, ConfigError):  # names the password file, never its content
        return str(exc)
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return "the server refused the username or password"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"the server answered {exc.smtp_code}"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__


def _permanent(exc: BaseException) -> bool:
    """A failure that trying again cannot mend: a 5xx answer (a refused login, sender,
    recipients or message), a server without what the config asks (STARTTLS, AUTH).
    Retrying a refused login only risks locking the account. (A password file gone
    missing is retried: a secret being rotated comes back.)"""
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code >= 500
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    return isinstance(exc, smtplib.SMTPNotSupportedError)


Mailer = Callable[[EmailMessage, SmtpConfig], dict[str, tuple[int, bytes]]]


def _holder() -> str:
    """This process, as the claims in the store name it."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class DigestScheduler:
    """Sends the digest at each slot; :meth:`run` until cancelled."""

    def __init__(
        self,
        maker: ReportMaker,
        store: Store,
        config: DigestConfig,
        zone: ZoneInfo,
        sent: Counter,
        *,
        holder: str | None = None,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        mailer: Mailer = send_mail,
    ) -> None:
        self._maker = maker
        self._store = store
        self._config = config
        self._zone = zone
        self._sent = sent
        self._holder = holder or _holder()
        self._clock = clock
        self._sleep = sleep
        self._mailer = mailer
        # One attempt's claim: the longest pause before it, the mail server's
        # time box for each of its steps, and room to make the report.
        self._hold = config.retry.max + 4 * config.smtp.timeout + CLAIM_MARGIN

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # the store is unavailable: try again later
                log.exception("the digest schedule failed; trying again later")
            now = self._clock()
            wait = (next_slot(now, self._config.schedule, self._zone) - now).total_seconds()
            await self._sleep(min(max(wait, 1.0), MAX_NAP))

    async def tick(self) -> None:
        """Send the latest slot if it is due and not done yet."""
        now = self._clock()
        due = latest_slot(now, self._config.schedule, self._zone)
        last = await self._store.last_digest()
        if last is None:
            log.info("digest scheduled; the first goes out at the next slot")
            if await self._store.claim_digest(due, self._holder, now=now, hold=self._hold):
                await self._store.finish_digest(due, self._holder, at=now)
        elif due > last:
            await self.deliver(due)

    async def deliver(self, slot: datetime) -> bool:
        """Make and send the digest of the period ending at ``slot``, retrying; True when
        sent by this process (False: given up, or another replica holds or did it)."""
        retry = self._config.retry
        pause = min(retry.first, retry.max).total_seconds()
        for attempt in range(1, retry.attempts + 1):
            claimed = await self._store.claim_digest(
                slot, self._holder, now=self._clock(), hold=self._hold
            )
            if not claimed:
                return False
            try:
                refused = await self._send(slot)
            except Exception as exc:  # retried unless the next attempt cannot work
                self._sent.labels("failed").inc()
                log.warning(
                    "the digest was not sent",
                    extra={"attempt": attempt, "of": retry.attempts, "reason": _reason(exc)},
                )
                if _permanent(exc):
                    break
                if attempt < retry.attempts:
                    await self._sleep(pause)
                    pause = min(pause * 2, retry.max.total_seconds())
                continue
            await self._store.finish_digest(slot, self._holder, at=self._clock())
            self._sent.labels("sent").inc()
            accepted = len(self._config.recipients) - len(refused)
            log.info("digest sent", extra={"recipients": accepted})
            if refused:
                log.warning(
                    "the mail server refused some of the digest's recipients",
                    extra={
                        "refused": ", ".join(
                            f"{rcpt} ({code})" for rcpt, (code, _) in refused.items()
                        )
                    },
                )
            return True
        # Given up until the next slot: done, so neither a restart nor a replica starts over.
        await self._store.finish_digest(slot, self._holder, at=self._clock())
        self._sent.labels("abandoned").inc()
        log.error("the digest was given up until the next slot")
        return False

    async def _send(self, slot: datetime) -> dict[str, tuple[int, bytes]]:
        rendered = await self._maker.make(self._maker.period_ending(self._config.period, slot))
        message = digest_message(rendered, self._config, self._clock())
        message.add_attachment(
            await rendered.pdf(),
            maintype="application",
            subtype="pdf",
            filename=report_filename(rendered.report.period, "pdf"),
        )
        return await asyncio.to_thread(self._mailer, message, self._config.smtp)


def digest_counter(registry: CollectorRegistry) -> Counter:
    counter = Counter(
        "scout_reports_digest_sent",
        "Scheduled report e-mails by outcome: sent, failed (an attempt, retried), "
        "abandoned (every attempt failed).",
        ["outcome"],
        registry=registry,
    )
    for outcome in OUTCOMES:
        counter.labels(outcome)
    return counter


def add_digest(app: web.Application) -> None:
    """Count digests on the app's registry and, when enabled, run the schedule."""
    sent = digest_counter(app[METRICS].registry)
    config = app[CONFIG]
    if not config.reports.digest.enabled:
        return

    async def schedule(app: web.Application) -> AsyncIterator[None]:
        scheduler = DigestScheduler(
            app[REPORTS], app[STORE], config.reports.digest, config.notifications.zone, sent
        )
        task = asyncio.create_task(scheduler.run(), name="reports-digest")
        yield
        await cancel_tasks([task])

    app.cleanup_ctx.append(schedule)
