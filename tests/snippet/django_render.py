"""Render Django templates in a fresh process (so Django settings never leak into other
tests). Reads ``{"settings": {...}, "cases": [{"template", "context"}]}`` as JSON on stdin and
prints a JSON list of ``{"html": ...}`` or ``{"error": "Type: message"}``."""

from __future__ import annotations

import json
import sys

import django
from django.conf import settings


def main() -> None:
    request = json.load(sys.stdin)
    settings.configure(
        INSTALLED_APPS=["matomo_wsgi.apps.MatomoConfig"],
        TEMPLATES=[
            {"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}
        ],
        **request["settings"],
    )
    django.setup()
    from django.template import engines

    engine = engines["django"]
    out: list[dict[str, str]] = []
    for case in request["cases"]:
        try:
            html = engine.from_string(case["template"]).render(case.get("context", {}))
            out.append({"html": html})
        except Exception as exc:  # reported to the test
            out.append({"error": f"{type(exc).__name__}: {exc}"})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
