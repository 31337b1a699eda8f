"""The netfilter client's parsers and its nft runner, on recorded output and stand-in commands.

``data/nft-ruleset.json`` is real ``nft -j list ruleset`` output (nftables
1.0.6) of a ruleset with a named counter, a drop policy, jump, goto, return,
reject and dnat rules, recorded after some TCP traffic through it.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from exporter.clients.netfilter import (
    BaseChain,
    ConntrackUsage,
    CountedRule,
    NftError,
    ProcReadError,
    RulesetFormatError,
    SystemNetfilterSource,
    parse_conntrack_stat,
    parse_ruleset,
    read_ruleset,
)

DATA = Path(__file__).parent / "data"
RULESET = (DATA / "nft-ruleset.json").read_bytes()

# /proc/net/stat/nf_conntrack of a 6.x kernel with two CPUs (the layout of the
# recorded netns), and of a 4.x kernel, whose columns differ.
STAT_6X = """\
entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000002  00000001 00000000 00000000 00000006 00000000 00000000 00000000 00000000 00000003 0000000a 00000000 00000000  00000000 00000000 00000000 00000004
00000002  00000000 00000000 00000000 000000ff 00000000 00000000 00000002 00000000 00000001 00000001 00000005 00000000  00000000 00000000 00000000 00000000
"""  # noqa: E501
STAT_4X = """\
entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
0000002a  00000000 00000010 00000000 00000001 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000  00000000 00000000 00000000 00000000
"""  # noqa: E501


def ruleset_of(*items: Any) -> bytes:
    return json.dumps({"nftables": [{"metainfo": {"json_schema_version": 1}}, *items]}).encode()


def rule(handle: Any = 10, **overrides: Any) -> dict[str, Any]:
    body = {
        "family": "inet",
        "table": "t",
        "chain": "c",
        "handle": handle,
        "expr": [{"counter": {"packets": 1, "bytes": 60}}, {"accept": None}],
    }
    return {"rule": {**body, **overrides}}


# --- the recorded ruleset ------------------------------------------------------------


def test_recorded_ruleset_yields_every_anonymous_counter_in_nft_order():
    parsed = parse_ruleset(RULESET)
    assert [(r.chain, r.handle, r.comment, r.action) for r in parsed.rules] == [
        ("input", 5, "established", "accept"),
        ("input", 6, "invalid", "drop"),
        ("input", 8, "", "drop"),
        ("input", 9, "", "reject"),
        ("input", 10, "to loopback", "jump loopback"),
        ("input", 11, "", "goto logs"),
        ("loopback", 12, "loopback done", "return"),
        ("logs", 13, "log chain", ""),
        ("pre", 2, "ssh forward", "dnat"),
    ]
    assert parsed.rules[0] == CountedRule(
        "inet", "filter", "input", 5, 21, 1416, "established", "accept"
    )
    assert (parsed.skipped, parsed.first_skip) == (0, "")


def test_recorded_ruleset_has_the_named_counter_not_the_rule_counting_into_it():
    parsed = parse_ruleset(RULESET)
    assert parsed.counters == (CountedRule("inet", "filter", "", 4, 3, 180, "web_hits"),)
    assert 7 not in {r.handle for r in parsed.rules}  # `counter name web_hits accept`


def test_recorded_ruleset_lists_base_chains_with_their_policy_only():
    assert parse_ruleset(RULESET).chains == (
        BaseChain("inet", "filter", "input", "input", "drop"),
        BaseChain("ip", "nat", "pre", "prerouting", "accept"),
    )


def test_empty_ruleset_is_read_as_empty():
    assert parse_ruleset(ruleset_of()) == parse_ruleset(b'{"nftables": []}')
    assert parse_ruleset(ruleset_of()).rules == ()


def test_str_and_bytes_parse_alike():
    assert parse_ruleset(RULESET.decode()) == parse_ruleset(RULESET)


def test_a_rule_without_a_counter_has_no_series():
    no_counter = rule(expr=[{"match": {"op": "==", "left": 1, "right": 1}}, {"drop": None}])
    assert parse_ruleset(ruleset_of(no_counter)).rules == ()


def test_the_last_verdict_is_the_action_and_only_the_first_counter_counts():
    two = rule(
        expr=[
            {"counter": {"packets": 5, "bytes": 500}},
            {"log": {"prefix": "x"}},
            {"counter": {"packets": 9, "bytes": 900}},
            {"jump": {"target": "next"}},
        ]
    )
    (parsed,) = parse_ruleset(ruleset_of(two)).rules
    assert (parsed.packets, parsed.bytes, parsed.action) == (5, 500, "jump next")


def test_a_chain_without_a_policy_field_has_the_kernels_default_accept():
    chain = {"chain": {"family": "netdev", "table": "t", "name": "in", "hook": "ingress"}}
    assert parse_ruleset(ruleset_of(chain)).chains == (
        BaseChain("netdev", "t", "in", "ingress", "accept"),
    )


# --- hostile and odd JSON ------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (b"", "not valid JSON"),
        (b"Error: syntax error", "not valid JSON"),
        (b'{"nftables": [', "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"[]", '"nftables" list'),
        (b'{"nftables": {}}', '"nftables" list'),
        (b'{"tables": []}', '"nftables" list'),
        (b"null", '"nftables" list'),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"nftables": [{"rule": {"handle": 1' + b"9" * 5000 + b"}}]}", "not valid JSON"),
    ],
)
def test_output_that_is_not_a_ruleset_fails_with_a_clear_error(output, message):
    with pytest.raises(RulesetFormatError, match=message):
        parse_ruleset(output)


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ("a string", "not an object"),
        ({"rule": []}, "'rule' is not an object"),
        (rule(expr="counter"), "'expr' is not a list"),
        (rule(expr=["counter"]), "statement is not an object"),
        (rule(handle="10"), "'handle' is '10', not a count"),
        (rule(handle=True), "'handle' is True, not a count"),
        (rule(handle=-1), "'handle' is -1, not a count"),
        (rule(table=None), "'table' is NoneType, not a string"),
        (rule(comment=7), "'comment' is int, not a string"),
        # Valid JSON (an escaped lone surrogate) that no UTF-8 exposition can carry.
        (rule(comment="web\ud800"), "'comment' is not valid Unicode"),
        (rule(chain="\udfff"), "'chain' is not valid Unicode"),
        (rule(expr=[{"counter": {"packets": 1.5, "bytes": 1}}]), "'packets' is 1.5"),
        (rule(expr=[{"counter": {"packets": float("nan"), "bytes": 1}}]), "'packets' is nan"),
        (rule(expr=[{"counter": {"bytes": 1}}]), "'packets' is None"),
        ({"counter": {"family": "inet", "table": "t", "name": "n", "handle": 3}}, "'packets'"),
        ({"chain": {"family": "inet", "table": "t", "hook": "input"}}, "'name' is NoneType"),
    ],
)
def test_an_object_of_odd_shape_is_skipped_and_named_while_the_rest_is_read(item, reason):
    parsed = parse_ruleset(ruleset_of(rule(handle=1), item, rule(handle=2)))
    assert [r.handle for r in parsed.rules] == [1, 2]
    assert parsed.skipped == 1
    assert reason in parsed.first_skip


def test_unknown_objects_and_fields_are_ignored_not_skipped():
    future = {"flowtable": {"name": "f"}}
    extra_field = rule(handle=3, future_field={"x": 1})
    parsed = parse_ruleset(ruleset_of(future, {"set": {"name": "s"}}, extra_field))
    assert ([r.handle for r in parsed.rules], parsed.skipped) == ([3], 0)


def test_a_huge_ruleset_is_read_whole():
    rules = [rule(handle=h, comment=f"r{h}" if h % 2 else None) for h in range(100_000)]
    parsed = parse_ruleset(ruleset_of(*rules))
    assert len(parsed.rules) == 100_000
    assert parsed.rules[-1].comment == "r99999"


# --- running nft ---------------------------------------------------------------------


def stand_in(tmp_path: Path, script: str) -> str:
    """A stand-in for nft: a shell script that ignores its arguments."""
    path = tmp_path / "fake-nft"
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_nft_output_is_read_through_the_command(tmp_path):
    recorded = DATA / "nft-ruleset.json"
    assert read_ruleset(stand_in(tmp_path, f"cat {recorded}")) == parse_ruleset(RULESET)


def test_nft_command_is_split_into_words_and_given_the_listing_arguments(tmp_path):
    args_file = tmp_path / "args"
    script = stand_in(tmp_path, f'echo "$@" > {args_file}; echo \'{{"nftables": []}}\'')
    read_ruleset(f"{script} --numeric")
    assert args_file.read_text().split() == ["--numeric", "-j", "list", "ruleset"]


def test_missing_nft_says_what_to_install():
    with pytest.raises(NftError, match="nft-missing-here not found: install nftables"):
        read_ruleset("nft-missing-here")


def test_a_command_that_cannot_be_executed_is_named(tmp_path):
    not_executable = tmp_path / "nft"
    not_executable.write_text("")
    with pytest.raises(NftError, match="cannot be run: permission denied"):
        read_ruleset(str(not_executable))


@pytest.mark.parametrize("command", ["", "   ", "'unbalanced"])
def test_an_unusable_command_setting_is_named(command):
    with pytest.raises(NftError, match=r"collectors\.netfilter\.nft_command"):
        read_ruleset(command)


def test_not_permitted_names_the_capability_needed(tmp_path):
    # What nft 1.0 prints without CAP_NET_ADMIN.
    script = stand_in(
        tmp_path,
        "echo 'Error: cache initialization failed: Operation not permitted' >&2; exit 1",
    )
    with pytest.raises(NftError, match="needs CAP_NET_ADMIN") as caught:
        read_ruleset(script)
    assert "cache initialization failed" in str(caught.value)


def test_other_failures_carry_the_exit_status_and_first_line(tmp_path):
    script = stand_in(tmp_path, "echo 'Error: No such file' >&2; echo more >&2; exit 3")
    with pytest.raises(NftError, match=r"exited with status 3: Error: No such file$"):
        read_ruleset(script)


def test_a_hung_nft_is_killed_at_the_timeout(tmp_path):
    pid_file = tmp_path / "pid"
    script = stand_in(tmp_path, f"echo $$ > {pid_file}; exec sleep 30")
    started = time.monotonic()
    with pytest.raises(NftError, match=r"did not finish within 0\.5s"):
        read_ruleset(script, timeout=0.5)
    assert time.monotonic() - started < 5
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)  # killed and reaped, not left running


def test_an_nft_that_closes_its_output_but_does_not_exit_is_killed_at_the_timeout(tmp_path):
    pid_file = tmp_path / "pid"
    script = stand_in(
        tmp_path,
        f"echo $$ > {pid_file}; echo '{{\"nftables\": []}}'; exec sleep 30 >&- 2>&-",
    )
    started = time.monotonic()
    with pytest.raises(NftError, match=r"did not exit within 0\.5s"):
        read_ruleset(script, timeout=0.5)
    assert time.monotonic() - started < 5
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)  # killed and reaped, not left running


def test_output_past_the_size_bound_is_refused_without_reading_it_all(tmp_path):
    script = stand_in(tmp_path, "exec yes '{\"nftables\": []}'")  # endless output
    with pytest.raises(NftError, match="printed more than 1000000 bytes"):
        read_ruleset(script, max_bytes=1_000_000)


def test_a_loud_stderr_does_not_block_or_fill_memory(tmp_path):
    script = stand_in(
        tmp_path, "head -c 2000000 /dev/zero | tr '\\0' x >&2; echo '{\"nftables\": []}'"
    )
    assert read_ruleset(script).rules == ()


# --- /proc ---------------------------------------------------------------------------


def test_conntrack_stat_sums_the_cpu_rows_and_leaves_entries_out():
    events = parse_conntrack_stat(STAT_6X)
    assert events["invalid"] == 6 + 255
    assert events["drop"] == 10 + 1
    assert events["insert_failed"] == 3 + 1
    assert events["early_drop"] == 5
    assert events["search_restart"] == 4
    assert events["clash_resolve"] == 1
    assert events["chain_too_long"] == 2
    assert "entries" not in events
    assert "clashres" not in events


def test_conntrack_stat_follows_the_header_of_older_kernels():
    events = parse_conntrack_stat(STAT_4X)
    assert events["searched"] == 0
    assert events["found"] == 16
    assert events["delete_list"] == 0
    assert len(events) == 16


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("entries found invalid\n", "no CPU rows"),
        ("entries found invalid\n00000001 00000002\n", "line 2 has 2 columns, the header 3"),
        ("entries found invalid\n00000001 0000000g 00000000\n", "line 2 is not hexadecimal"),
    ],
)
def test_a_malformed_stat_table_fails_with_the_line(text, message):
    with pytest.raises(ProcReadError, match=message):
        parse_conntrack_stat(text)


def fake_procfs(root: Path, *, count: str = "17\n", limit: str = "65536\n") -> Path:
    sysctls = root / "sys" / "net" / "netfilter"
    sysctls.mkdir(parents=True)
    (sysctls / "nf_conntrack_count").write_text(count)
    (sysctls / "nf_conntrack_max").write_text(limit)
    (root / "net" / "stat").mkdir(parents=True)
    (root / "net" / "stat" / "nf_conntrack").write_text(STAT_6X)
    return root


def test_procfs_option_is_where_the_files_are_read(tmp_path):
    source = SystemNetfilterSource(procfs=fake_procfs(tmp_path))
    assert source.conntrack_usage() == ConntrackUsage(count=17, limit=65536)
    assert source.conntrack_events() == parse_conntrack_stat(STAT_6X)


def test_without_nf_conntrack_loaded_there_is_nothing_to_report(tmp_path):
    (tmp_path / "sys" / "net" / "netfilter").mkdir(parents=True)  # netfilter, no conntrack
    source = SystemNetfilterSource(procfs=tmp_path)
    assert source.conntrack_usage() is None
    assert source.conntrack_events() is None


def test_a_procfs_path_without_netfilter_is_an_error_naming_it(tmp_path):
    source = SystemNetfilterSource(procfs=tmp_path / "nowhere")
    with pytest.raises(ProcReadError, match=r"is procfs mounted at .*nowhere\?"):
        source.conntrack_usage()
    with pytest.raises(ProcReadError, match="is procfs mounted"):
        source.conntrack_events()


def test_a_count_that_is_not_a_number_is_an_error(tmp_path):
    source = SystemNetfilterSource(procfs=fake_procfs(tmp_path, limit="lots\n"))
    with pytest.raises(ProcReadError, match="nf_conntrack_max does not hold a number: 'lots"):
        source.conntrack_usage()


def test_a_missing_stat_file_is_an_error_naming_it(tmp_path):
    root = fake_procfs(tmp_path)
    (root / "net" / "stat" / "nf_conntrack").unlink()
    with pytest.raises(ProcReadError, match=r"cannot read .*nf_conntrack: No such file"):
        SystemNetfilterSource(procfs=root).conntrack_events()


def test_the_live_host_procfs_reads_when_conntrack_is_loaded():
    source = SystemNetfilterSource()
    usage = source.conntrack_usage()
    if usage is None:
        pytest.skip("nf_conntrack is not loaded on this host")
    assert 0 <= usage.count <= usage.limit
    events = source.conntrack_events()
    assert events is not None
    assert "invalid" in events
