"""One entry point for every flow packet: picks the parser by version, keeps templates bounded."""

from __future__ import annotations

from exporter.collectors.flows.ipfix import parse_ipfix
from exporter.collectors.flows.records import UNKNOWN_VERSION, BadPacketError
from exporter.collectors.flows.sets import DecodedFlows, SamplingStates
from exporter.collectors.flows.templates import TemplateStore
from exporter.collectors.flows.v5 import parse_v5
from exporter.collectors.flows.v9 import parse_v9


class FlowDecoder:
    """Decodes NetFlow v5, v9 and IPFIX packets; template state is per exporter address.

    ``decode`` raises ``BadPacketError`` for a packet it cannot read at all. At
    most ``max_templates`` templates are held (see ``templates.TemplateStore``),
    and as many per-domain sampling states. IPv4 flows from fixed-size
    templates come as columns, the rest as tuples (see ``sets.DecodedFlows``).
    """

    def __init__(self, max_templates: int) -> None:
        self.templates = TemplateStore(max_templates)
        self.sampling = SamplingStates(max_templates)

    def decode(self, data: bytes | memoryview, exporter: str) -> DecodedFlows:
        version = (data[0] << 8 | data[1]) if len(data) >= 2 else 0
        if version == 5:
            return DecodedFlows("v5", [parse_v5(data)])
        if version == 9:
            return parse_v9(data, exporter, self.templates, self.sampling)
        if version == 10:
            return parse_ipfix(data, exporter, self.templates, self.sampling)
        raise BadPacketError(UNKNOWN_VERSION, f"version {version}")
