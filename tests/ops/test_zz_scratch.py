from tests.ops.helpers import dead_letter
from tests.support import order_event, produce, running_consumer, eventually
async def test_show(settings, simulator, cli, capsys):
    events=[order_event(phone="+12125550142", order_id="2001")]
    await dead_letter(settings, simulator, events)
    produce(settings, settings.kafka.topic_order_shipped, [b'{"eventId": "poison_1", oops'])
    async with running_consumer(settings):
        async def n():
            r = await cli.run_async("dlq","list","--json"); return len(r.json())==2
        await eventually(n)
    outs=[]
    for argv in [("dlq","list"),("dlq","replay","--dry-run"),("dlq","replay"),("trace",events[0]["eventId"]),("suppress","add","+12125550142"),("suppress","list"),("produce","--count","3")]:
        r = await cli.run_async(*argv); outs.append(f"$ sms-relay {' '.join(argv)}  -> {r.code}\n{r.out}{r.err}")
    async with running_consumer(settings):
        await eventually(lambda: True)
        import asyncio; await asyncio.sleep(2)
    r = await cli.run_async("trace",events[0]["eventId"]); outs.append(f"$ trace after replay -> {r.code}\n{r.out}{r.err}")
    open("/tmp/demo.txt","w").write("\n".join(outs))
