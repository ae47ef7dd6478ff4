"""The local stack: Apache Cassandra 5 and Google's Pub/Sub emulator as processes of this checkout.

`python stack/localstack.py up|down|status|observe` (the Makefile's `make stack`, ...) runs
`stack.cli`. The parts, as Apache Cassandra's own `ccm` splits them: `common` (paths, where the
services are expected) and `service` (a process this project started), `node` and `cluster`
(one Cassandra node; the nodes together), `secure` (key material and passwords), `emulator`,
`prometheus`, and `compose` (STACK=docker).
"""
