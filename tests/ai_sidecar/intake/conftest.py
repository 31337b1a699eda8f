"""The return-trip fixtures (:mod:`tests.ai_sidecar.notify.harness`) for the tests here."""

from tests.ai_sidecar.notify.harness import alertmanager, am_config, db, hook, session, sink

__all__ = ["alertmanager", "am_config", "db", "hook", "session", "sink"]
