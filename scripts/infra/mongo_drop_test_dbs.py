"""Drops the databases test runs create (kiln_test_*, kiln_sys_*, kiln_e2e_*), so a dev stack
on the same server does not carry them (and their TTL passes) after a test run.

Usage (with the interpreter of .kiln/infra/mongo/venv): mongo_drop_test_dbs.py URI
"""

import re
import sys

from pymongo import MongoClient

TEST_DATABASE = re.compile(r"^kiln_(test|sys|e2e)_[0-9a-f]{32}$")


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    client = MongoClient(sys.argv[1], serverSelectionTimeoutMS=3000)
    dropped = 0
    for name in client.list_database_names():
        if TEST_DATABASE.match(name):
            client.drop_database(name)
            dropped += 1
    print(f"dropped {dropped} test database(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
