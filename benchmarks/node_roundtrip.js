// Anchor: Node ocpp-rpc round trips in one process over loopback.
// Usage: node benchmarks/node_roundtrip.js CALLS CONCURRENCY  (prints one JSON line)
'use strict';
const path = require('path');
const modules = process.env.OCPP_RPC_NODE_MODULES
    || path.join(__dirname, '..', '.interop', 'node', 'node_modules');
const { RPCServer, RPCClient } = require(path.join(modules, 'ocpp-rpc'));

async function main() {
    const calls = Number(process.argv[2] || 5000);
    const concurrency = Number(process.argv[3] || 1);
    const server = new RPCServer({ protocols: ['ocpp1.6'], pingIntervalMs: 0 });
    server.on('client', (client) => {
        client.handle('Heartbeat', () => ({ currentTime: '2024-01-01T00:00:00Z' }));
    });
    const http = await server.listen(0, '127.0.0.1');
    const port = http.address().port;
    const client = new RPCClient({
        endpoint: `ws://127.0.0.1:${port}`, identity: 'BENCH', protocols: ['ocpp1.6'],
        callConcurrency: concurrency, pingIntervalMs: 0, reconnect: false,
    });
    await client.connect();
    for (let i = 0; i < 200; i++) await client.call('Heartbeat', {});
    const start = process.hrtime.bigint();
    const cpu0 = process.cpuUsage();
    const pending = [];
    for (let i = 0; i < calls; i++) {
        pending.push(client.call('Heartbeat', {}));
        if (concurrency === 1) await pending.pop();
    }
    await Promise.all(pending);
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const cpu = process.cpuUsage(cpu0);
    console.log(JSON.stringify({ calls, seconds, cpu: (cpu.user + cpu.system) / 1e6 }));
    await client.close();
    await server.close();
}
main().catch((err) => { console.error(err); process.exit(1); });
