"""Console users, sessions and failed sign-ins: the same behaviour from every store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ai_sidecar.store import ConsoleAccount, ConsoleSession, Store
from tests.ai_sidecar.store.conftest import StoreOpener

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def session(key: str, user: str = "alice", at: datetime = T0) -> ConsoleSession:
    return ConsoleSession(
        key=key, user=user, csrf_token=f"csrf-{key}", credential="c1", created_at=at, seen_at=at
    )


async def test_users_are_added_replaced_listed_and_removed(store: Store):
    await store.save_console_user(ConsoleAccount("bob", "viewer", "$argon2id$b"), T0)
    await store.save_console_user(ConsoleAccount("alice", "viewer", "$argon2id$a"), T0)
    await store.save_console_user(ConsoleAccount("alice", "operator", "$argon2id$a2"), T0)

    assert await store.get_console_user("alice") == ConsoleAccount(
        "alice", "operator", "$argon2id$a2"
    )
    assert await store.get_console_user("nobody") is None
    assert [u.name for u in await store.list_console_users()] == ["alice", "bob"]
    assert await store.remove_console_user("bob") is True
    assert await store.remove_console_user("bob") is False
    assert [u.name for u in await store.list_console_users()] == ["alice"]


async def test_a_user_is_found_whatever_the_case_of_the_name(store: Store):
    await store.save_console_user(ConsoleAccount("Alice.Smith", "viewer", "$argon2id$a"), T0)
    # The stored spelling comes back, for display and for the session's row.
    for typed in ("Alice.Smith", "alice.smith", "ALICE.SMITH"):
        assert await store.get_console_user(typed) == ConsoleAccount(
            "Alice.Smith", "viewer", "$argon2id$a"
        )
    assert await store.get_console_user("alice.smit") is None
    # Only A-Z fold: a letter no user name has matches no user.
    assert await store.get_console_user("ALİCE.SMITH") is None


async def test_of_two_spellings_an_older_store_holds_the_exact_one_is_found(store: Store):
    await store.save_console_user(ConsoleAccount("bob", "viewer", "$argon2id$lower"), T0)
    later = T0 + timedelta(seconds=1)
    await store.save_console_user(ConsoleAccount("Bob", "operator", "$argon2id$upper"), later)
    assert (await store.get_console_user("Bob")) == ConsoleAccount(
        "Bob", "operator", "$argon2id$upper"
    )
    assert (await store.get_console_user("bob")).role == "viewer"  # type: ignore[union-attr]
    # Neither exact: the one added first.
    assert (await store.get_console_user("BOB")).name == "bob"  # type: ignore[union-attr]


async def test_a_hash_is_replaced_only_over_the_one_it_replaces(store: Store):
    await store.save_console_user(ConsoleAccount("alice", "viewer", "$2b$old"), T0)
    assert await store.replace_console_password_hash("alice", "$2b$old", "$argon2id$new", T0)
    assert await store.get_console_user("alice") == ConsoleAccount(
        "alice", "viewer", "$argon2id$new"
    )
    # Changed meanwhile (user passwd), or removed: left as it now is.
    assert not await store.replace_console_password_hash("alice", "$2b$old", "$argon2id$x", T0)
    await store.remove_console_user("alice")
    assert not await store.replace_console_password_hash("alice", "$argon2id$new", "y", T0)
    assert await store.get_console_user("alice") is None


async def test_sessions_are_kept_touched_forward_only_and_closed(store: Store):
    await store.open_console_session(session("k1"))
    assert await store.get_console_session("k1") == session("k1")
    assert await store.get_console_session("k2") is None

    later = T0 + timedelta(minutes=5)
    await store.touch_console_session("k1", later)
    await store.touch_console_session("k1", T0 + timedelta(minutes=1))  # a slower replica
    found = await store.get_console_session("k1")
    assert found is not None
    assert found.seen_at == later

    await store.close_console_session("k1")
    assert await store.get_console_session("k1") is None


async def test_removing_a_user_ends_their_sessions_only(store: Store):
    await store.save_console_user(ConsoleAccount("alice", "viewer", "h"), T0)
    await store.open_console_session(session("a", "alice"))
    await store.open_console_session(session("b", "bob"))
    await store.remove_console_user("alice")
    assert await store.get_console_session("a") is None
    assert await store.get_console_session("b") is not None


async def test_pruning_ends_sessions_too_old_or_idle(store: Store):
    await store.open_console_session(session("old", at=T0 - timedelta(hours=13)))
    await store.open_console_session(session("idle", at=T0 - timedelta(hours=2)))
    await store.open_console_session(session("live", at=T0 - timedelta(hours=2)))
    await store.touch_console_session("live", T0)
    pruned = await store.prune_console_sessions(
        created_before=T0 - timedelta(hours=12), seen_before=T0 - timedelta(hours=1)
    )
    assert pruned == 2
    assert await store.get_console_session("live") is not None
    assert await store.get_console_session("idle") is None


async def test_login_failures_are_counted_per_key_forgotten_and_cleared(store: Store):
    for minutes in (0, 1, 2):
        at = T0 + timedelta(minutes=minutes)
        await store.record_login_failure(["user:x", "address:1"], at, forget_before=T0)
    await store.record_login_failure(["address:1"], T0 + timedelta(minutes=3), forget_before=T0)

    failures = await store.login_failures(["user:x", "address:1", "user:y"], T0)
    assert failures["user:x"] == [T0 + timedelta(minutes=m) for m in (0, 1, 2)]
    assert len(failures["address:1"]) == 4
    assert failures["user:y"] == []
    since = await store.login_failures(["user:x"], T0 + timedelta(minutes=2))
    assert since["user:x"] == [T0 + timedelta(minutes=2)]

    # Recording forgets what is older than forget_before, under every key.
    await store.record_login_failure(
        ["user:z"], T0 + timedelta(hours=1), forget_before=T0 + timedelta(minutes=2)
    )
    assert len((await store.login_failures(["address:1"], T0))["address:1"]) == 2

    await store.clear_login_failures("user:x")
    assert (await store.login_failures(["user:x"], T0))["user:x"] == []
    assert len((await store.login_failures(["address:1"], T0))["address:1"]) == 2

    # Recording under no key only forgets (what every sign-in does).
    await store.record_login_failure(
        [], T0 + timedelta(hours=2), forget_before=T0 + timedelta(hours=1)
    )
    assert (await store.login_failures(["address:1", "user:z"], T0)) == {
        "address:1": [],
        "user:z": [T0 + timedelta(hours=1)],
    }


async def test_accounts_survive_reopening(open_store: StoreOpener):
    first = await open_store()
    try:
        await first.save_console_user(ConsoleAccount("alice", "operator", "h"), T0)
        await first.open_console_session(session("k"))
    finally:
        await first.close()
    second = await open_store()
    try:
        assert await second.get_console_user("alice") is not None
        assert await second.get_console_session("k") == session("k")
    finally:
        await second.close()


async def test_a_users_language_is_kept_changed_forgotten_and_removed_with_them(store: Store):
    await store.save_console_user(ConsoleAccount("alice", "viewer", "$argon2id$a"), T0)
    assert await store.get_console_language("alice") == ""
    await store.save_console_language("alice", "fr", T0)
    # A user of the users file, not in the store, may choose too.
    await store.save_console_language("file-user", "fr", T0)
    assert await store.get_console_language("alice") == "fr"
    await store.save_console_language("alice", "en", T0 + timedelta(minutes=1))
    assert await store.get_console_language("alice") == "en"
    await store.save_console_language("alice", "", T0)
    assert await store.get_console_language("alice") == ""
    await store.save_console_language("alice", "fr", T0)
    assert await store.remove_console_user("alice") is True
    assert await store.get_console_language("alice") == ""
    assert await store.get_console_language("file-user") == "fr"
