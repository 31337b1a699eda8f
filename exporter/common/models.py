"""Building blocks of the config models: the strict base, secrets and regexes."""

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, PlainSerializer, SecretStr

SECRET_MASK = "<secret>"

# A secret is held as SecretStr and shown as <secret> wherever a config is rendered.
Secret = Annotated[SecretStr, PlainSerializer(lambda _: SECRET_MASK, return_type=str)]
Regex = Annotated[re.Pattern[str], PlainSerializer(lambda p: p.pattern, return_type=str)]


class StrictModel(BaseModel):
    # strict: YAML's `true` is not the number 1, nor 2.0 the integer 2.
    # hide_input_in_errors: a validation error's text never repeats a value (a secret).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, hide_input_in_errors=True)


def drop_extension_keys(data: object) -> object:
    """Drop ``x-*`` keys from a mapping: they exist to hold YAML anchors."""
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if not str(k).startswith("x-")}
    return data


class NameFilter(StrictModel):
    """Which names to keep: those matching ``include`` (if set) and not ``exclude``.

    Both regexes are anchored at both ends, as in Prometheus. A filter written in
    the config file replaces the built-in one whole: to keep the default exclude
    while adding an include, repeat the exclude (``/config`` shows it).
    """

    include: Regex | None = None
    exclude: Regex | None = None

    def keeps(self, name: str) -> bool:
        if self.include is not None and not self.include.fullmatch(name):
            return False
        return self.exclude is None or not self.exclude.fullmatch(name)
