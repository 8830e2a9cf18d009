"""Readiness probe / smoke test for the local MongoDB-wire server (SecantusDB).

Usage (with the interpreter of .kiln/infra/mongo/venv):
  mongo_ping.py URI                 ping; exit 0 when the server answers
  mongo_ping.py URI --smoke         ping, insert a document, read it back, delete it
"""

import sys

from pymongo import MongoClient


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    uri = sys.argv[1]
    smoke = "--smoke" in sys.argv[2:]
    client = MongoClient(uri, serverSelectionTimeoutMS=1500, connectTimeoutMS=1500)
    try:
        client.admin.command("ping")
        if smoke:
            coll = client["kiln_smoke"]["ping"]
            doc_id = coll.insert_one({"hello": "kiln"}).inserted_id
            found = coll.find_one({"_id": doc_id})
            if not found or found.get("hello") != "kiln":
                print(f"smoke: read back {found!r}", file=sys.stderr)
                return 1
            coll.delete_one({"_id": doc_id})
            print(f"smoke ok: inserted and read back {doc_id}")
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        print(f"mongo not ready: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
