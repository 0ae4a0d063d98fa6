"""Message templates per locale: placeholders checked against the model, texts rendered."""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel

from sms_relay.errors import ConfigurationError

DEFAULT_LOCALE = "en"


@dataclass(frozen=True)
class Template:
    """`text` with `{field}` placeholders; each `optional` part is appended only when its
    field is set (e.g. `{"trackingUrl": " Tracking: {trackingUrl}"}`)."""

    text: str
    optional: Mapping[str, str] = field(default_factory=dict)

    def render(self, event: BaseModel) -> str:
        values = {name: getattr(event, name) for name in type(event).model_fields}
        parts = [self.text.format_map(values)]
        for name, part in self.optional.items():
            if values.get(name) is not None:
                parts.append(part.format_map(values))
        return "".join(parts)

    def problems(self, model: type[BaseModel]) -> list[str]:
        """Placeholders that name no field of `model` (or an optional one outside its own
        part, which would render `None`)."""
        fields = model.model_fields
        found = []
        for name in placeholders(self.text):
            if name not in fields:
                found.append(f"{{{name}}} is not a field of {model.__name__}")
            elif not fields[name].is_required() and fields[name].default is None:
                found.append(f"{{{name}}} may be unset: put it in an optional part")
        for key, part in self.optional.items():
            if key not in fields:
                found.append(f"optional part {key!r} is not a field of {model.__name__}")
            found.extend(
                f"{{{name}}} is not a field of {model.__name__}"
                for name in placeholders(part)
                if name not in fields
            )
        return found


def placeholders(text: str) -> list[str]:
    """The field names a format string refers to. Raises ValueError on a malformed one."""
    return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]


def pick(templates: Mapping[str, Template], locale: str | None) -> Template:
    """The template of `locale` (`de-AT` falls back to `de`), else the default locale's."""
    if locale:
        wanted = locale.replace("_", "-").lower()
        for candidate in (wanted, wanted.split("-", 1)[0]):
            if candidate in templates:
                return templates[candidate]
    return templates[DEFAULT_LOCALE]


def check_templates(kind: str, model: type[BaseModel], templates: Mapping[str, Template]) -> None:
    """Raises ConfigurationError (one line) naming the first broken template of `kind`."""
    if DEFAULT_LOCALE not in templates:
        raise ConfigurationError(f"kind {kind}: no template for the default locale en")
    for locale, template in templates.items():
        try:
            problems = template.problems(model)
        except ValueError as error:
            problems = [f"not a valid template ({error})"]
        if problems:
            raise ConfigurationError(f"kind {kind}, template {locale}: {problems[0]}")
