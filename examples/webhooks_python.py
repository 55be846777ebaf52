"""Be told when tasks finish: subscribe a small aiohttp receiver, submit tasks, and verify every
signed delivery with the Standard Webhooks library.

    YMERA_WEBHOOK_ALLOWED_NETWORKS=127.0.0.1/32 ymera up    # let webhooks reach this machine
    python examples/webhooks_python.py --tasks 3

The receiver listens on 127.0.0.1 (`--port`); a platform refuses loopback receivers unless the
operator allows them, as above. Behind a tunnel or on another host, pass the URL the platform
should call with `--public-url`.

The script subscribes the receiver to `task.succeeded` and `task.failed` of `--tenant`, submits
`--tasks` calculator tasks (the last one also with a `callback_url`, signed with the tenant's
callback secret), and prints each delivery as it arrives: verified (or refused) and deduplicated
by its `webhook-id`, as a receiver should. It deletes the subscription when it is done.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from cluster.client import Client


class Receiver:
    """Verifies each delivery with the secret of the path it came to, and keeps each event
    once (a retried or redelivered event comes again under the same `webhook-id`)."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}  # path -> secret
        self.seen: dict[str, dict[str, Any]] = {}
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        secret = self.secrets.get(request.path)
        try:
            if secret is None:
                raise WebhookVerificationError("no secret for this path yet")
            event = Webhook(secret).verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            print(f"refused {request.headers.get('webhook-id')}: {exc}")
            return web.Response(status=400)
        message_id = request.headers["webhook-id"]
        if message_id not in self.seen:
            self.seen[message_id] = event
            data = event["data"]
            print(f"{request.path}  {event['type']:<15} task {data['task_id']}  "
                  f"result {json.dumps(data.get('result'))}  ({message_id})")
            self.arrived.set()
        return web.Response(status=204)  # any 2xx: delivered


async def serve(receiver: Receiver, port: int) -> web.AppRunner:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    app.router.add_post("/callback", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def main(args: argparse.Namespace) -> int:
    receiver = Receiver()
    runner = await serve(receiver, args.port)
    base = args.public_url or f"http://127.0.0.1:{args.port}"
    client = Client.connect()  # blocking calls: run them off the event loop
    hook = await asyncio.to_thread(client.webhook_create, f"{base}/hook",
                                   ["task.succeeded", "task.failed"], tenant=args.tenant,
                                   description="examples/webhooks_python.py")
    receiver.secrets["/hook"] = hook["secret"]
    callback = await asyncio.to_thread(client.webhook_callback_secret, tenant=args.tenant)
    receiver.secrets["/callback"] = callback["secret"]
    print(f"subscribed {hook['id']} -> {hook['url']}")
    try:
        for n in range(args.tasks):
            last = n == args.tasks - 1
            task_id = await asyncio.to_thread(
                client.submit, f"what is {n} * 7", {"expression": f"{n} * 7"},
                agent_type="calculator", tenant=args.tenant,
                callback_url=f"{base}/callback" if last else None)
            print(f"submitted {task_id}")
        expected = args.tasks + 1  # one event per task, and the last one's callback
        deadline = asyncio.get_running_loop().time() + args.wait
        while len(receiver.seen) < expected:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                print(f"only {len(receiver.seen)} of {expected} deliveries arrived; see "
                      f"`ymera webhooks deliveries --tenant {args.tenant}`")
                return 1
            receiver.arrived.clear()
            try:
                await asyncio.wait_for(receiver.arrived.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        print(f"all {expected} deliveries arrived and verified")
        return 0
    finally:
        await asyncio.to_thread(client.webhook_delete, hook["id"], args.tenant)
        await runner.cleanup()


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--tenant", default="default")
    parser.add_argument("--port", type=int, default=8787, help="the receiver's port")
    parser.add_argument("--public-url", help="how the platform reaches the receiver "
                                             "(default http://127.0.0.1:PORT)")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for them")
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(arguments())))
