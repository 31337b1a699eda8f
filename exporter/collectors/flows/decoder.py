"""One entry point for every flow packet: picks the parser by version, keeps templates bounded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from exporter.collectors.flows.ipfix import parse_ipfix
from exporter.collectors.flows.records import UNKNOWN_VERSION, BadPacketError, FlowRecord
from exporter.collectors.flows.sets import DecodedFlows, SamplingStates
from exporter.collectors.flows.templates import TemplateStore
from exporter.collectors.flows.v5 import parse_v5
from exporter.collectors.flows.v9 import parse_v9

# The ``version`` label of each wire version.
VERSION_LABELS: Final = {5: "v5", 9: "v9", 10: "ipfix"}


@dataclass(frozen=True, slots=True)
class DecodedPacket:
    """A packet's flows (sampling applied) and the first problem met, if any.

    IPv4 flows from fixed-size templates come as ``columns``; the rest as tuples.
    """

    version: str
    flows: DecodedFlows

    @property
    def problem(self) -> str | None:
        return self.flows.problem

    def all_records(self) -> list[FlowRecord]:
        return self.flows.all_records()


class FlowDecoder:
    """Decodes NetFlow v5, v9 and IPFIX packets; template state is per exporter address.

    ``decode`` raises ``BadPacketError`` for a packet it cannot read at all. At
    most ``max_templates`` templates are held (see ``templates.TemplateStore``),
    and as many per-domain sampling states.
    """

    def __init__(self, max_templates: int) -> None:
        self.templates = TemplateStore(max_templates)
        self.sampling = SamplingStates(max_templates)

    def decode(self, data: bytes | memoryview, exporter: str) -> DecodedPacket:
        version = int.from_bytes(data[:2]) if len(data) >= 2 else 0
        if version == 5:
            return DecodedPacket("v5", DecodedFlows(columns=[parse_v5(data)]))
        if version == 9:
            return DecodedPacket("v9", parse_v9(data, exporter, self.templates, self.sampling))
        if version == 10:
            flows = parse_ipfix(data, exporter, self.templates, self.sampling)
            return DecodedPacket("ipfix", flows)
        raise BadPacketError(UNKNOWN_VERSION, f"version {version}")
