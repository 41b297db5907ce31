#!/usr/bin/env python3
"""Generate Ferryman's compact price table from LiteLLM's public model price table.

Usage: python3 server/scripts/gen_prices.py ../shared/reference/model_prices.json \
           > server/src/pricing/prices.json

Prices become integers in femto-USD (1e-15 USD) per token, converted from the decimal text of
each number (never through float arithmetic), so the gateway can price a call exactly in
integer nano-USD. Only what Ferryman uses is kept: provider, mode, the per-token input, output
and prompt-cache prices, and the context window.
"""

import datetime
import decimal
import json
import sys

MODES = {"chat", "completion", "responses", "embedding"}
FEMTO = decimal.Decimal(10) ** 15
PRICE_FIELDS = {
    "input_cost_per_token": "input",
    "output_cost_per_token": "output",
    "cache_read_input_token_cost": "cache_read",
    "cache_creation_input_token_cost": "cache_write",
}


ROUNDED = []


def femto(value):
    """USD per token (a JSON number) → integer femto-USD per token, exactly."""
    exact = decimal.Decimal(repr(value)) * FEMTO
    rounded = exact.to_integral_value(rounding=decimal.ROUND_HALF_EVEN)
    if rounded != exact:
        # A few published prices are quotients (e.g. 8/7 USD per million tokens); half a
        # femto-USD per token is far below a nano-USD per call.
        ROUNDED.append(value)
    return int(rounded)


def main():
    source = sys.argv[1]
    with open(source) as f:
        table = json.load(f)
    models = {}
    for name, spec in sorted(table.items()):
        if not isinstance(spec, dict) or spec.get("mode") not in MODES:
            continue
        entry = {"provider": spec.get("litellm_provider", ""), "mode": spec["mode"]}
        for field, short in PRICE_FIELDS.items():
            if isinstance(spec.get(field), (int, float)):
                entry[short] = femto(spec[field])
        if "input" not in entry and "output" not in entry:
            continue
        for field in ("max_input_tokens", "max_output_tokens"):
            if isinstance(spec.get(field), int):
                entry[field] = spec[field]
        models[name] = entry
    out = {
        "_source": "LiteLLM model_prices_and_context_window.json (MIT), version 1.110.2, "
        "via shared/reference/model_prices.json",
        "_generated": datetime.date.today().isoformat(),
        "_units": "prices are femto-USD (1e-15 USD) per token",
        "models": models,
    }
    json.dump(out, sys.stdout, separators=(",", ":"), sort_keys=False)
    sys.stdout.write("\n")
    print(f"{len(models)} models; {len(ROUNDED)} prices rounded to whole femto-USD", file=sys.stderr)


if __name__ == "__main__":
    main()
