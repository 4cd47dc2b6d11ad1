"""cairn-web's entry point: gevent patches the standard library before anything else is imported.

The store client (requests, urllib3) imports ssl; patched later, an SSL context made in a worker
recurses until the stack is gone. With etcd reached over mutual TLS in a cluster, the patch has
to come first, so it happens here, in a module that imports nothing of Cairn's before it, and
then cairn.web.server runs (its gunicorn gevent workers patch again, which changes nothing).
"""


def main(argv: list[str] | None = None) -> int:
    from gevent import monkey
    monkey.patch_all()
    from cairn.web import server
    return server.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
