"""Repeated warnings and errors are written once per interval, with a count of the rest."""

from __future__ import annotations

import io
import json
import logging

from exporter.common.logs import JsonFormatter, RepeatFilter, configure_logging


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _logger(interval: float = 60.0) -> tuple[logging.Logger, io.StringIO, _Clock]:
    clock = _Clock()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RepeatFilter(interval, clock=clock))
    logger = logging.getLogger(f"test.repeats.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream, clock


def _records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_flood_of_one_error_is_one_line_per_interval_with_the_count():
    logger, stream, clock = _logger(interval=60)
    for _ in range(10_000):
        try:
            raise OSError(24, "Too many open files")
        except OSError:
            logger.exception("cannot accept connections")
    clock.now = 61
    logger.error("cannot accept connections")
    records = _records(stream)
    assert [r["msg"] for r in records] == ["cannot accept connections"] * 2
    assert "repeated" not in records[0]
    assert "Too many open files" in str(records[0]["error"])
    # The exception type is part of the kind: the plain error is another kind.
    assert "repeated" not in records[1]


def _fail(error: Exception) -> None:
    raise error


def _fail_elsewhere(error: Exception) -> None:
    raise error


def test_one_exception_type_from_two_places_or_with_two_texts_is_two_kinds():
    logger, stream, _ = _logger()
    failures = [
        (_fail, ValueError("incident 1")),
        (_fail_elsewhere, ValueError("incident 1")),  # another bug, same type and text
        (_fail, ValueError("x" * 99 + "a")),  # another text
        (_fail, ValueError("x" * 99 + "b")),
        (_fail, ValueError("x" * 99 + "b" + "y" * 200)),  # same first 100 characters
    ]
    for _ in range(3):
        for fail, error in failures:
            try:
                fail(error)
            except ValueError:
                logger.exception("analysis failed")
    errors = [str(r["error"]).splitlines()[-1] for r in _records(stream)]
    assert len(errors) == 4
    assert sum("incident 1" in e for e in errors) == 2


def test_the_next_record_after_the_interval_carries_how_many_were_held_back():
    logger, stream, clock = _logger(interval=60)
    for second in range(120):
        clock.now = second
        logger.warning("peer unreachable", extra={"peer": "am1"})
    records = _records(stream)
    assert [(r["msg"], r.get("repeated")) for r in records] == [
        ("peer unreachable", None),
        ("peer unreachable", 59),
    ]


def test_different_messages_and_contexts_are_different_kinds():
    logger, stream, _ = _logger()
    for _ in range(3):
        logger.warning("collector failed", extra={"collector": "host"})
        logger.warning("collector failed", extra={"collector": "snmp"})
        logger.error("collector failed", extra={"collector": "host"})
    assert len(_records(stream)) == 3


def test_info_and_debug_are_never_held_back():
    logger, stream, _ = _logger()
    for _ in range(5):
        logger.info("pruned rows")
        logger.debug("polled")
    assert len(_records(stream)) == 10


def test_only_so_many_kinds_are_remembered():
    clock = _Clock()
    repeats = RepeatFilter(60, kinds=2, clock=clock)

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("x", logging.ERROR, "", 0, message, None, None)

    assert repeats.filter(record("a"))
    assert repeats.filter(record("b"))
    assert repeats.filter(record("c"))  # "a" is forgotten
    assert not repeats.filter(record("c"))
    assert repeats.filter(record("a"))


def test_both_daemons_logging_holds_back_repeats(capsys):
    configure_logging("info", "json")
    try:
        for _ in range(100):
            logging.getLogger("asyncio").error("socket.accept() out of system resource")
    finally:
        logging.getLogger().handlers.clear()
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_pypsrp_s_traceback_for_a_winrm_read_timeout_stays_out_of_the_log(capsys):
    # pypsrp logs each read timeout at error with its traceback; the WinRM
    # scraper's own warning says the same in one line.
    configure_logging("info", "json")
    try:
        try:
            raise TimeoutError("read timed out")
        except TimeoutError as exc:
            logging.getLogger("pypsrp.wsman").exception("%s during WSMan request", exc)
        logging.getLogger("exporter.targets.handler").warning("WinRM scrape: timeout")
    finally:
        logging.getLogger().handlers.clear()
        logging.getLogger("pypsrp").setLevel(logging.NOTSET)
    [line] = capsys.readouterr().err.splitlines()
    assert json.loads(line)["msg"] == "WinRM scrape: timeout"
