// Node ocpp-rpc 2.2.1's RPCServer alone in a process, for the raw driver (driver.py).
//   node benchmarks/server_node.js --port P
// Protocols ocpp1.6, default options (keep-alive pings on); answers Heartbeat with
// {currentTime} and anything else with {}. Commands on stdin as in server_ours.py:
// {"op":"call","clients":K,"calls":N,"msg":"gc"|"gcall"} -> {"calls","seconds"};
// end of input stops the server.
'use strict';
const path = require('path');
const readline = require('readline');
const modules = process.env.OCPP_RPC_NODE_MODULES
    || path.join(__dirname, '..', '.interop', 'node', 'node_modules');
const { RPCServer } = require(path.join(modules, 'ocpp-rpc'));

const PARAMS = { gc: { key: ['HeartbeatInterval'] }, gcall: {} };
const argv = process.argv.slice(2);
const port = Number(argv[argv.indexOf('--port') + 1]);
setTimeout(() => process.exit(124), 900 * 1000).unref();

async function main() {
    const server = new RPCServer({ protocols: ['ocpp1.6'] });
    const clients = new Map();
    server.on('client', (client) => {
        client.handle(({ method }) => (method === 'Heartbeat' ? { currentTime: new Date().toISOString() } : {}));
        clients.set(client.identity, client);
        client.once('close', () => { if (clients.get(client.identity) === client) clients.delete(client.identity); });
    });
    await server.listen(port, '127.0.0.1');
    const rl = readline.createInterface({ input: process.stdin });
    rl.on('line', async (line) => {
        const cmd = JSON.parse(line);
        while (clients.size < cmd.clients) await new Promise((r) => setTimeout(r, 10));
        const params = PARAMS[cmd.msg];
        const t0 = process.hrtime.bigint();
        await Promise.all([...clients.values()].map(async (client) => {
            for (let i = 0; i < cmd.calls; i++) await client.call('GetConfiguration', params);
        }));
        const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
        process.stdout.write(JSON.stringify({ calls: cmd.calls * cmd.clients, seconds }) + '\n');
    });
    rl.on('close', async () => { await server.close({ force: true }); process.exit(0); });
}
main().catch((e) => { console.error(e); process.exit(1); });
