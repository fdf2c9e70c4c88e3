"""`helium keys create|list|revoke`: the gateway's API keys (in <data-dir>/gateway/keys.sqlite).

The secret key is printed once, by `create`; only its hash is stored.
Works while the gateway runs (it reads the keys on every request).
"""

from __future__ import annotations

import argparse
import json
import sys

from coordinator.gateway.config import GatewaySettings
from coordinator.gateway.keys import KeyStore
from helium.config import ConfigError, load_settings

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="helium keys", description="create, list and revoke gateway API keys")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", dest="data_dir")
    common.add_argument("--config")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create", parents=[common], help="make a key (printed once)")
    c.add_argument("--name", required=True)
    c.add_argument("--rate-per-min", type=int, default=None, help="requests per minute (default: the setting)")
    c.add_argument("--spend-limit-wei", type=int, default=None, help="total fees this key may spend")
    sub.add_parser("list", parents=[common], help="list keys (never the secrets)")
    r = sub.add_parser("revoke", parents=[common], help="revoke a key by id")
    r.add_argument("key_id")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        settings = load_settings(GatewaySettings, {"data_dir": args.data_dir}, section="gateway",
                                 config_file=args.config)
    except ConfigError as exc:
        print(f"helium keys: {exc}", file=sys.stderr)
        return 2
    store = KeyStore(settings.keys_db_path)
    try:
        if args.command == "create":
            rate = args.rate_per_min or settings.default_rate_per_min
            try:
                secret, key = store.create(args.name, rate_per_min=rate, spend_limit_wei=args.spend_limit_wei)
            except ValueError as exc:
                print(f"helium keys: {exc}", file=sys.stderr)
                return 2
            if args.json:
                print(json.dumps({"key": secret, **key.as_dict()}))
            else:
                print(f"{key.id}  {key.name}  rate={key.rate_per_min}/min  "
                      f"spend_limit_wei={key.spend_limit_wei if key.spend_limit_wei is not None else 'none'}")
                print(f"key: {secret}")
                print("Store it now: it is not shown again.")
        elif args.command == "list":
            keys = store.list()
            if args.json:
                print(json.dumps([k.as_dict() for k in keys]))
            else:
                for k in keys:
                    limit = k.spend_limit_wei if k.spend_limit_wei is not None else "none"
                    state = "revoked" if k.revoked else "active"
                    print(f"{k.id}  {k.name}  {k.hint}  {state}  rate={k.rate_per_min}/min  "
                          f"spent={k.spent_wei} reserved={k.reserved_wei} limit={limit}")
        elif args.command == "revoke":
            try:
                key = store.revoke(args.key_id)
            except KeyError:
                print(f"helium keys: no key with id {args.key_id}", file=sys.stderr)
                return 1
            print(json.dumps(key.as_dict()) if args.json else f"revoked {key.id} ({key.name})")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
