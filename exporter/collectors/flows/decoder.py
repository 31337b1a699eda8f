"""One entry point for every flow packet: picks the parser by version, keeps templates bounded."""

from __future__ import annotations

from exporter.collectors.flows.columns import RawFlows
from exporter.collectors.flows.ipfix import ipfix_columns, parse_ipfix
from exporter.collectors.flows.records import UNKNOWN_VERSION, BadPacketError
from exporter.collectors.flows.sets import DecodedFlows, SamplingStates
from exporter.collectors.flows.templates import TemplateStore
from exporter.collectors.flows.v5 import parse_v5
from exporter.collectors.flows.v9 import parse_v9, v9_columns


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

    def decode_columns(
        self, data: bytes | memoryview, exporter: str
    ) -> tuple[str, list[RawFlows]] | None:
        """(version label, flows) of the common packet, read quickly; None: use ``decode``.

        The common packet is NetFlow v5, or v9/IPFIX of data sets whose
        templates are known and columnar. It yields the same flows ``decode``
        would, and changes no template or sampling state; a packet that would
        (templates, options) or may be bad gives None, for ``decode`` to read
        and report. ``BadPacketError`` only where ``decode`` raises the same.
        """
        version = (data[0] << 8 | data[1]) if len(data) >= 2 else 0
        if version == 5:
            return "v5", [parse_v5(data)]
        if version == 9:
            found = v9_columns(data, exporter, self.templates, self.sampling)
            return None if found is None else ("v9", found)
        if version == 10:
            found = ipfix_columns(data, exporter, self.templates, self.sampling)
            return None if found is None else ("ipfix", found)
        return None
