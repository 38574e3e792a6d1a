// The Node anchor of bench.py: ocpp-rpc 2.2.1; prints one JSON line.
// Usage: node benchmarks/bench_node.js SCENARIO [--frame F] [--calls N] [--clients N]
//        [--conns N] [--strict] [--port P]
// Scenarios as in bench_ours.py (seq, inflight, many, server, idle, idle-clients).
'use strict';
const fs = require('fs');
const path = require('path');
const readline = require('readline');
const { spawn } = require('child_process');
const modules = process.env.OCPP_RPC_NODE_MODULES
    || path.join(__dirname, '..', '.interop', 'node', 'node_modules');
const { RPCServer, RPCClient } = require(path.join(modules, 'ocpp-rpc'));
const FRAMES = JSON.parse(fs.readFileSync(path.join(__dirname, 'frames.json'), 'utf8'));
const PAGE = 4096;

function parseArgs() {
    const args = { scenario: process.argv[2], frame: 'Heartbeat', calls: 2000, clients: 200,
        conns: 2000, strict: false, port: 0 };
    const argv = process.argv.slice(3);
    for (let i = 0; i < argv.length; i++) {
        const name = argv[i].replace(/^--/, '');
        if (name === 'strict') args.strict = true;
        else if (name === 'frame') args.frame = argv[++i];
        else args[name] = Number(argv[++i]);
    }
    return args;
}

const rss = () => Number(fs.readFileSync('/proc/self/statm', 'utf8').split(' ')[1]) * PAGE;
const cpuSeconds = (since) => { const c = process.cpuUsage(since); return (c.user + c.system) / 1e6; };
const now = () => Number(process.hrtime.bigint()) / 1e9;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function handlers(target) {
    for (const [method, frame] of Object.entries(FRAMES)) target.handle(method, () => frame.result);
}

async function startServer(args, options = {}) {
    const server = new RPCServer({ protocols: ['ocpp1.6'], pingIntervalMs: 0,
        strictMode: args.strict, ...options });
    server.clients_ = [];
    server.on('client', (client) => { handlers(client); server.clients_.push(client); });
    const http = await server.listen(0, '127.0.0.1');
    return { server, port: http.address().port };
}

async function openClient(port, identity, args, options = {}) {
    const client = new RPCClient({ endpoint: `ws://127.0.0.1:${port}`, identity,
        protocols: ['ocpp1.6'], pingIntervalMs: 0, reconnect: false, strictMode: args.strict,
        ...options });
    handlers(client);
    await client.connect();
    return client;
}

async function timedCalls(peers, args) {
    const params = FRAMES[args.frame].params;
    const start = now();
    const cpu0 = process.cpuUsage();
    await Promise.all(peers.map(async (peer) => {
        for (let i = 0; i < args.calls; i++) await peer.call(args.frame, params);
    }));
    return { calls: args.calls * peers.length, seconds: now() - start, cpu: cpuSeconds(cpu0) };
}

const scenarios = {
    async seq(args) {
        const { server, port } = await startServer(args);
        const client = await openClient(port, 'BENCH', args);
        const params = FRAMES[args.frame].params;
        for (let i = 0; i < Math.min(200, args.calls); i++) await client.call(args.frame, params);
        const times = [];
        const start = now();
        const cpu0 = process.cpuUsage();
        for (let i = 0; i < args.calls; i++) {
            const t0 = now();
            await client.call(args.frame, params);
            times.push(now() - t0);
        }
        const seconds = now() - start;
        const cpu = cpuSeconds(cpu0);
        times.sort((a, b) => a - b);
        const p50 = times[Math.floor(times.length / 2)];
        const p99 = times[Math.min(times.length - 1, Math.floor(times.length * 0.99))];
        return { calls: args.calls, seconds, cpu, p50, p99 };
    },
    async inflight(args) {
        const { port } = await startServer(args);
        const client = await openClient(port, 'BENCH', args, { callConcurrency: 100 });
        const params = FRAMES[args.frame].params;
        for (let i = 0; i < Math.min(200, args.calls); i++) await client.call(args.frame, params);
        const start = now();
        const cpu0 = process.cpuUsage();
        const pending = [];
        for (let i = 0; i < args.calls; i++) pending.push(client.call(args.frame, params));
        await Promise.all(pending);
        return { calls: args.calls, seconds: now() - start, cpu: cpuSeconds(cpu0) };
    },
    async many(args) {
        const { port } = await startServer(args);
        const clients = [];
        for (let i = 0; i < args.clients; i++) clients.push(await openClient(port, `CP${i}`, args));
        return timedCalls(clients, args);
    },
    async server(args) {
        const { server, port } = await startServer(args);
        for (let i = 0; i < args.clients; i++) await openClient(port, `CP${i}`, args);
        while (server.clients_.length < args.clients) await sleep(10);
        return timedCalls(server.clients_, args);
    },
    async idle(args) {
        // Server side here, with default options (keep-alive pings on).
        const { server, port } = await startServer(args, { pingIntervalMs: 30000 });
        const child = spawn(process.execPath, [__filename, 'idle-clients', '--conns',
            String(args.conns), '--port', String(port)], { stdio: ['pipe', 'pipe', 'inherit'] });
        const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
        const expect = async (event) => {
            for (;;) {
                const { value, done } = await lines.next();
                if (done) throw new Error(`child exited before ${event}`);
                const message = JSON.parse(value);
                if (message.event === event) return message;
            }
        };
        await expect('warm');
        server.clients_.length = 0;
        await sleep(300);
        const base = rss();
        child.stdin.write('go\n');
        const report = await expect('ready');
        while (server.clients_.length < args.conns) await sleep(50);
        await sleep(300);
        const held = rss() - base;
        const conns = server.clients_.length;
        child.stdin.end();
        await new Promise((r) => child.on('exit', r));
        return { conns, setup_seconds: report.setup_seconds, server_rss: held / conns,
            client_rss: report.rss / conns };
    },
    async 'idle-clients'(args) {
        const warm = await openClient(args.port, 'WARM', args, { pingIntervalMs: 30000 });
        await warm.close();
        console.log(JSON.stringify({ event: 'warm' }));
        const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
        await lines.next();
        await sleep(300);
        const base = rss();
        const start = now();
        const clients = [];
        let next = 0;
        await Promise.all(Array.from({ length: 100 }, async () => {
            while (next < args.conns) {
                const i = next++;
                clients.push(await openClient(args.port, `IDLE${i}`, args, { pingIntervalMs: 30000 }));
            }
        }));
        const seconds = now() - start;
        await sleep(300);
        console.log(JSON.stringify({ event: 'ready', setup_seconds: seconds, rss: rss() - base }));
        for (;;) { const { done } = await lines.next(); if (done) break; }
        process.exit(0);
    },
};

scenarios[parseArgs().scenario](parseArgs())
    .then((result) => { if (result) console.log(JSON.stringify(result)); process.exit(0); })
    .catch((err) => { console.error(err); process.exit(1); });
