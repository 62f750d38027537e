"""The provider clients: at most so many requests to one host at once on the interactive pool."""

from __future__ import annotations

import asyncio
import contextlib

import httpx

from bot.pools import HostSlots, PerHostClient, provider_client

WAIT = 5.0


async def test_a_slow_host_takes_its_share_and_other_hosts_go_past_it() -> None:
    release = asyncio.Event()
    reached: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        reached.append(request.url.host)
        if request.url.host == "slow.example":
            await asyncio.wait_for(release.wait(), WAIT)
        return httpx.Response(200, text="ok")

    async with PerHostClient(per_host=2, transport=httpx.MockTransport(handler)) as client:
        slow = [asyncio.create_task(client.get("https://slow.example/x")) for _ in range(5)]
        async with asyncio.timeout(WAIT):
            while len(reached) < 2 or client.hosts.in_flight("slow.example") < 5:
                await asyncio.sleep(0.001)

        other = await asyncio.wait_for(client.get("https://fast.example/y"), WAIT)

        assert other.text == "ok"
        # Two of the slow host's five reached it; three wait their turn, not in the pool.
        assert reached.count("slow.example") == 2
        release.set()
        assert all(r.status_code == 200 for r in await asyncio.gather(*slow))
        assert reached.count("slow.example") == 5
        assert client.hosts.in_flight("slow.example") == 0  # forgotten once idle


async def test_a_failed_request_gives_its_slot_back() -> None:
    async def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with PerHostClient(per_host=1, transport=httpx.MockTransport(refuse)) as client:
        for _ in range(3):  # with the slot kept, the second would wait for ever
            with contextlib.suppress(httpx.ConnectError):
                await asyncio.wait_for(client.get("https://down.example/"), WAIT)
        assert client.hosts.in_flight("down.example") == 0


async def test_slots_are_per_host_and_in_order() -> None:
    slots = HostSlots(per_host=1)
    order: list[int] = []

    async def hold(n: int) -> None:
        async with slots.slot("h:443"):
            order.append(n)
            await asyncio.sleep(0)

    await asyncio.gather(*(hold(n) for n in range(4)))
    assert order == [0, 1, 2, 3]


async def test_the_bulk_client_has_no_host_cap_and_both_keep_their_pool_alive() -> None:
    async with provider_client(3, timeout=1.0) as bulk, provider_client(5, timeout=1.0, per_host=2) as mine:
        assert not isinstance(bulk, PerHostClient)
        assert isinstance(mine, PerHostClient) and mine.hosts.per_host == 2
