#!/usr/bin/python3
"""Self-test of the pylm wire peers (pylm_wire.py, pylm_client.py,
pylm_worker.py, pylm_master.py).

  /usr/bin/python3 tests/interop/test_interop_python.py [-v] [unittest args]

(a) GoldenFrames: every golden PalmMessage frame parses with palm_pb2 and
    re-serializes byte for byte (GOLDEN "the encoding is canonical").
(b) PeersBuildGolden: the peers' code, replaying the golden operations,
    builds frames of the same structure: same length, same wire fields in the
    same order, same function/stage/cache/payload/topic; the random uuids
    differ but play the same roles (one bijection golden <-> ours).
(c) EndToEnd: the peers as processes on 127.0.0.1: master + 2 workers + a
    job of 10; the cache example; worker faults and --messages; a Server and
    eval; cache set/get/delete; a wrong server name; --pylm-faults.

Environment: PALM_PB2_DIR (else protoc is run once and the directory handed
to the children), PALM_GOLDEN_DIR (default /work/shared/golden).
"""
import sys

sys.dont_write_bytecode = True

import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import pylm_wire as w  # noqa: E402

PY = '/usr/bin/python3'
GOLDEN = Path(os.environ.get('PALM_GOLDEN_DIR', '/work/shared/golden'))
HAVE_GOLDEN = (GOLDEN / 'manifest.json').is_file()
FIELDS = ('pipeline', 'client', 'stage', 'function', 'cache', 'payload')
NONASCII = ('\u00f1and\u00fa \u2014 \u65e5\u672c\u8a9e \u2713 '.encode('utf-8')
            + b'\x00\x80\xfe\xff')
ADDRESS = re.compile(rb'^tcp://127\.0\.0\.1:[0-9]+$')


def quiet_logger(name):
    """A logger whose lines land in a StringIO (returned too)."""
    sink = io.StringIO()
    return w.make_logger(name, 'DEBUG', sink), sink


def is_uuid4(text):
    try:
        return len(text) == 36 and uuid.UUID(text).version == 4
    except (ValueError, TypeError):
        return False


def golden_bytes(name):
    return bytes.fromhex((GOLDEN / name).read_text().strip())


def golden_entries():
    return json.loads((GOLDEN / 'manifest.json').read_text())['entries']


# ---------------------------------------------------------------------------
# (a)

@unittest.skipUnless(HAVE_GOLDEN, f'no golden frames in {GOLDEN}')
class GoldenFrames(unittest.TestCase):
    """GOLDEN: "Parsing any frame and serializing it again ... gives back the
    same bytes"."""

    PATTERNS = ('*.request.hex', '*client_push.hex', '*master_to_worker.hex',
                '*worker_to_master.hex', '*.part1.hex')

    def test_every_palm_frame_round_trips(self):
        files = sorted({p.name for pattern in self.PATTERNS
                        for p in GOLDEN.glob(pattern)})
        listed = {e['files'][-1] for e in golden_entries()
                  if e['kind'] != 'raw reply'}
        self.assertEqual(set(files), listed)
        for name in files:
            with self.subTest(frame=name):
                frame = golden_bytes(name)
                self.assertEqual(w.serialize(w.parse(frame)), frame)
                numbers = w.wire_fields(frame)
                self.assertEqual(numbers, sorted(set(numbers)))

    def test_decoded_fields_match_the_manifest(self):
        for entry in golden_entries():
            if entry['kind'] == 'raw reply':
                continue
            with self.subTest(entry=entry['name']):
                frames = [golden_bytes(f) for f in entry['files']]
                self.assertEqual([len(f) for f in frames], entry['sizes'])
                decoded = entry['decoded']
                message = w.parse(frames[-1])
                self.assertEqual(w.wire_fields(frames[-1]),
                                 decoded['wire_fields'])
                for field in ('pipeline', 'client', 'stage', 'function',
                              'cache'):
                    self.assertEqual(getattr(message, field), decoded[field])
                self.assertEqual(len(message.payload), decoded['payload_len'])
                if decoded.get('payload_hex') is not None:  # <= 256 bytes
                    self.assertEqual(message.payload.hex(),
                                     decoded['payload_hex'])
                if len(frames) == 2:
                    self.assertEqual(frames[0].decode('utf-8'), entry['topic'])


# ---------------------------------------------------------------------------
# (b)

def worker_methods_of_the_capture():
    """The capture's Worker: `foo` returns b'worker processed ' + payload,
    `fail` raises (golden/README.md, "Client -> Master -> Worker")."""
    return {'foo': lambda ctx, payload: b'worker processed ' + payload,
            'fail': w.WORKER_METHODS['fail']}


def build_our_frames():
    """Replay every golden operation with the peers' code; return
    {entry name: frame, or (topic, frame) for a PUB}, and the Server's log."""
    ours = {}
    logger, log = quiet_logger('golden-replay')

    client = w.new_uuid()   # one pylm Client for the cache requests
    for name, op, key, value in (
            ('get_name', 'get', 'name', None),
            ('get_pub_address', 'get', 'pub_address', None),
            ('get_pull_address', 'get', 'pull_address', None),
            ('set_generated_key', 'set', None, b'a value'),
            ('set_key', 'set', 'my_key', b'a value'),
            ('get_key', 'get', 'my_key', None),
            ('get_missing_key', 'get', 'missing_key', None),
            ('delete_key', 'delete', 'my_key', None),
            ('set_nonascii_key', 'set', 'cl\u00e9-\u65e5\u672c', NONASCII)):
        ours[f'cache_client_{name}.request'] = w.serialize(
            w.cache_request('my_server', client, op, key=key, value=value))
    ours['cache_client_session_set_key.request'] = w.serialize(
        w.cache_request('my_server', w.new_uuid(), 'set', key='my_key',
                        value=b'a value', session='my_session'))
    worker = w.new_uuid()
    for key in ('worker_push_address', 'worker_pull_address'):
        ours[f'cache_worker_get_{key}.request'] = w.serialize(
            w.cache_request('_', worker, 'get', key=key))

    client, pipeline = w.new_uuid(), w.new_uuid()
    server = w.ServerCore('my_server', w.SERVER_METHODS, logger)
    for name, function, payload, cache in (
            ('server_eval', 'my_server.foo', b'a message', ''),
            ('server_eval_cache', 'my_server.foo', b'a message', 'my_cache'),
            ('server_eval_64k', 'my_server.echo', bytes(range(256)) * 256, ''),
            ('server_eval_nonascii', 'my_server.echo', NONASCII, ''),
            ('server_eval_empty', 'my_server.echo', b'', ''),
            ('server_eval_raises', 'my_server.fail', b'a message', ''),
            ('server_eval_wrong_server', 'other_server.foo', b'a message', ''),
            ('server_job_0', 'my_server.foo', b'job message 0', ''),
            ('server_job_1', 'my_server.foo', b'job message 1', '')):
        push = w.serialize(w.client_message(function, payload, pipeline,
                                            client, cache))
        ours[f'{name}.client_push'] = push
        ours[f'{name}.server_pub'] = server.process(push)

    client, pipeline = w.new_uuid(), w.new_uuid()
    core = w.WorkerCore('my_worker', worker_methods_of_the_capture(), logger)
    for name, function, cache in (
            ('master_eval', 'my_master.foo', ''),
            ('master_eval_raises', 'my_master.fail', ''),
            ('master_eval_unknown_method', 'my_master.nope', ''),
            ('master_eval_cache', 'my_master.foo', 'my_cache')):
        push = w.serialize(w.client_message(function, b'a message', pipeline,
                                            client, cache))
        [to_worker] = w.master_scatter(push)
        back = core.process(to_worker)
        [published] = w.master_gather(back, 'my_master', pipelined=False)
        ours.update({f'{name}.client_push': push,
                     f'{name}.master_to_worker': to_worker,
                     f'{name}.worker_to_master': back,
                     f'{name}.master_pub': published})

    client, pipeline = w.new_uuid(), w.new_uuid()
    push = w.serialize(w.client_message(['my_server.foo', 'my_pipeline.bar'],
                                        b'a message', pipeline, client))
    first = w.ServerCore('my_server', w.SERVER_METHODS, logger,
                         pipelined=True).process(push)
    second = w.ServerCore(
        'my_pipeline', {'bar': lambda ctx, p: b'and I pipelined ' + p},
        logger, pipelined=False).process(first[1])
    ours.update({'pipeline_eval.client_push': push,
                 'pipeline_eval.server_pub': first,
                 'pipeline_eval.pipeline_pub': second})
    return ours, log.getvalue()


class Bijection:
    """Random values must play the same roles: golden value g stands for
    exactly one of ours, and back (the same Client uuid everywhere, a fresh
    uuid4 per cache request, the stamped `cache` kept to the PUB...)."""

    def __init__(self, test):
        self.test, self.forward, self.backward = test, {}, {}

    def pair(self, golden, ours, what):
        self.test.assertTrue(is_uuid4(golden), f'{what}: golden {golden!r}')
        self.test.assertTrue(is_uuid4(ours), f'{what}: ours {ours!r}')
        self.test.assertNotEqual(golden, ours, what)
        self.test.assertEqual(self.forward.setdefault(golden, ours), ours, what)
        self.test.assertEqual(self.backward.setdefault(ours, golden), golden,
                              what)


@unittest.skipUnless(HAVE_GOLDEN, f'no golden frames in {GOLDEN}')
class PeersBuildGolden(unittest.TestCase):
    """The peers build what pylm put on the wire, up to the random uuids."""

    @classmethod
    def setUpClass(cls):
        cls.ours, cls.log = build_our_frames()

    def test_every_golden_message_has_the_same_structure(self):
        roles = Bijection(self)
        for entry in golden_entries():
            if entry['kind'] == 'raw reply':
                continue
            name = entry['name']
            with self.subTest(entry=name):
                self.assertIn(name, self.ours, 'no counterpart built')
                golden = [golden_bytes(f) for f in entry['files']]
                ours = self.ours[name]
                ours = list(ours) if isinstance(ours, tuple) else [ours]
                self.assertEqual(len(ours), len(golden))
                if len(golden) == 2:
                    topics = (golden[0].decode(), ours[0])
                    if 'topic' in entry['random']:
                        roles.pair(*topics, f'{name} topic')
                    else:
                        self.assertEqual(*topics)
                self.assertEqual(len(ours[-1]), len(golden[-1]))
                self.assertEqual(w.wire_fields(ours[-1]),
                                 w.wire_fields(golden[-1]))
                g, o = w.parse(golden[-1]), w.parse(ours[-1])
                for field in FIELDS:
                    if field in entry['random']:
                        roles.pair(getattr(g, field), getattr(o, field),
                                   f'{name} {field}')
                    else:
                        self.assertEqual(getattr(o, field), getattr(g, field),
                                         f'{name} {field}')

    def test_wrong_server_is_logged_as_pylm(self):
        self.assertIn('You called other_server, instead of my_server', self.log)

    def test_cache_answers_the_golden_requests_as_pylm(self):
        """Replay the golden requests, in capture order, on a CacheStore
        preset like the capture's Server and Master."""
        store = w.CacheStore({
            'name': b'my_server', 'pull_address': b'tcp://127.0.0.1:5556',
            'pub_address': b'tcp://127.0.0.1:5557',
            'worker_push_address': b'tcp://127.0.0.1:5558',
            'worker_pull_address': b'tcp://127.0.0.1:5559'})
        entries = golden_entries()
        for request, reply in zip(entries, entries[1:]):
            if not request['name'].endswith('.request'):
                continue
            with self.subTest(entry=request['name']):
                ours = store.handle(golden_bytes(request['files'][0]))
                golden = golden_bytes(reply['files'][0])
                if not reply['random']:
                    self.assertEqual(ours, golden)
                elif 'port' in reply['random']:
                    self.assertRegex(ours, ADDRESS)
                    self.assertRegex(golden, ADDRESS)
                else:
                    self.assertTrue(is_uuid4(ours.decode()))
                    self.assertTrue(is_uuid4(golden.decode()))


class CacheAndFaults(unittest.TestCase):
    """Where palm's peers differ from pylm on purpose: they always answer."""

    def request(self, function, **fields):
        return w.serialize(w.new_message(function=function, **fields))

    def test_cache_always_answers(self):
        store = w.CacheStore()
        self.assertEqual(store.handle(self.request('s.delete', payload=b'k')),
                         b'k')
        self.assertEqual(store.handle(self.request('nodot', payload=b'k')), b'')
        self.assertEqual(store.handle(self.request('s.other', payload=b'k')),
                         b'')
        self.assertEqual(store.handle(b'\xff\xff\xff'), b'')
        self.assertEqual(store.handle(self.request('s.get', payload=b'\xff')),
                         b'')

    def test_pylm_killers_raise_fault(self):
        logger, _ = quiet_logger('faults')
        server = w.ServerCore('s', w.SERVER_METHODS, logger)
        worker = w.WorkerCore('w', w.WORKER_METHODS, logger)
        for function, stage, cores in (
                ('s.nope', 0, [server]),
                ('nodot', 0, [server, worker]),
                ('s.foo.x', 0, [server]),
                ('s.foo s.foo', 2, [server, worker])):
            frame = self.request(function, stage=stage, payload=b'x')
            for core in cores:
                with self.subTest(function=function, core=type(core).__name__):
                    with self.assertRaises(w.Fault):
                        core.process(frame)

    def test_fields_7_and_up_kept_unless_drop_unknown(self):
        """PROTOCOL: "whether they survive a pylm Server or Worker (which
        re-serializes) depends on its protobuf version"."""
        logger, _ = quiet_logger('unknown')
        frame = self.request('m.echo', payload=b'x', error='why', flags=1)
        for drop, fields in ((False, [4, 6, 7, 9]), (True, [4, 6])):
            core = w.WorkerCore('w', w.WORKER_METHODS, logger,
                                drop_unknown=drop)
            with self.subTest(drop_unknown=drop):
                self.assertEqual(w.wire_fields(core.process(frame)), fields)

    def test_stage_picks_the_step(self):
        logger, _ = quiet_logger('steps')
        worker = w.WorkerCore('w', w.WORKER_METHODS, logger)
        frame = self.request('a.echo b.foo', stage=1, payload=b'x')
        self.assertEqual(w.parse(worker.process(frame)).payload,
                         b'w processed x')


# ---------------------------------------------------------------------------
# (c)

WAIT = 15.0          # bound on any wait for a peer
CLIENT_TIMEOUT = 10  # the client's own --timeout


def free_addresses(count):
    """Free TCP ports on 127.0.0.1, found by binding port 0."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(('127.0.0.1', 0))
            sockets.append(s)
        return [f'tcp://127.0.0.1:{s.getsockname()[1]}' for s in sockets]
    finally:
        for s in sockets:
            s.close()


def child_env():
    return dict(os.environ, PALM_PB2_DIR=w.pb2_dir(),
                PYTHONDONTWRITEBYTECODE='1')


class Peer:
    """One peer process; its stdout and stderr lines are collected."""

    def __init__(self, script, args):
        self.args = [PY, str(HERE / script)] + [str(a) for a in args]
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=child_env())
        self.lines = {'out': [], 'err': []}
        self.changed = threading.Condition()
        self.readers = [threading.Thread(target=self._read, args=(stream, key),
                                         daemon=True)
                        for stream, key in ((self.proc.stdout, 'out'),
                                            (self.proc.stderr, 'err'))]
        for reader in self.readers:
            reader.start()

    def _read(self, stream, key):
        for raw in stream:
            with self.changed:
                line = raw.decode('utf-8', 'replace').rstrip('\n')
                self.lines[key].append(line)
                self.changed.notify_all()

    def wait_for(self, pattern, timeout=WAIT):
        """Wait (bounded) for a stdout line matching the regex."""
        regex = re.compile(pattern)
        deadline = w.Deadline(timeout)
        with self.changed:
            while not any(regex.search(line) for line in self.lines['out']):
                if deadline.expired() or self.proc.poll() is not None:
                    raise AssertionError(f'{pattern!r} not seen: {self.text()}')
                self.changed.wait(0.1)

    def finish(self, timeout=WAIT):
        """Wait for the exit; return the exit code."""
        code = self.proc.wait(timeout)
        for reader in self.readers:
            reader.join(timeout)
        return code

    def stop(self):
        """SIGTERM, then SIGKILL if needed: only this process."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for reader in self.readers:
            reader.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()

    def text(self):
        with self.changed:
            return '\n'.join(self.lines['out'] + self.lines['err'])


class Peers:
    """Starts peers; whatever happens, stops each one it started."""

    def __init__(self):
        self.started = []

    def __enter__(self):
        return self

    def start(self, script, *args):
        peer = Peer(script, args)
        self.started.append(peer)
        return peer

    def __exit__(self, exc_type, exc, tb):
        errors = []
        for peer in reversed(self.started):
            try:
                peer.stop()
            except Exception as error:  # stop the others all the same
                errors.append(error)
        if errors and exc_type is None:
            raise errors[0]
        return False


def run_client(*args, timeout=CLIENT_TIMEOUT):
    """pylm_client.py to completion; subprocess.run kills it on timeout."""
    return subprocess.run(
        [PY, str(HERE / 'pylm_client.py')] + [str(a) for a in args]
        + ['--timeout', str(timeout), '--log-level', 'WARNING'],
        capture_output=True, env=child_env(), timeout=timeout + WAIT)


class EndToEnd(unittest.TestCase):
    """The peers as processes, on 127.0.0.1 only."""

    def start_master(self, peers, name='server', *extra):
        db, pull, pub, wpull, wpush = free_addresses(5)
        master = peers.start('pylm_master.py', '--name', name, '--db', db,
                             '--pull', pull, '--pub', pub, '--worker-pull',
                             wpull, '--worker-push', wpush, '--lifetime', 120,
                             *extra)
        master.wait_for(r' - root - INFO - Master ')
        return master, db

    def start_server(self, peers, *extra):
        db, pull, pub = free_addresses(3)
        server = peers.start('pylm_master.py', '--server', '--name',
                             'my_server', '--db', db, '--pull', pull, '--pub',
                             pub, '--lifetime', 120, *extra)
        server.wait_for(r' - my_server - INFO - Server ')
        return server, db

    def start_worker(self, peers, db, name, *extra):
        worker = peers.start('pylm_worker.py', '--name', name, '--db', db,
                             '--lifetime', 120, *extra)
        worker.wait_for(rf' - {name} - INFO - Ready: ')
        return worker

    def assert_replies(self, result, expected_lines, code=0):
        self.assertEqual(result.returncode, code, result.stderr.decode())
        self.assertEqual(result.stdout.decode().splitlines(), expected_lines)

    def test_master_two_workers_job_of_ten(self):
        """FEATURES 5, example parallel: 10 x b'<name> processed a message',
        spread over the workers."""
        with Peers() as peers:
            master, db = self.start_master(peers)
            workers = [self.start_worker(peers, db, name)
                       for name in ('worker1', 'worker2')]
            result = run_client('--server', 'server', '--db', db, '--function',
                                'server.foo', '--mode', 'job', '--messages', 10)
            self.assertEqual(result.returncode, 0, result.stderr.decode())
            lines = result.stdout.decode().splitlines()
            self.assertEqual(len(lines), 10, lines)
            for line in lines:
                self.assertRegex(line, r'^worker[12] processed a message$')
            self.assertEqual({line.split()[0] for line in lines},
                             {'worker1', 'worker2'})
            for worker in workers:
                worker.proc.terminate()
                self.assertEqual(worker.finish(), 0, worker.text())
                self.assertIn('Stopped by signal 15 after', worker.text())
            master.proc.terminate()
            self.assertEqual(master.finish(), 0, master.text())

    def test_cache_example(self):
        """FEATURES 5, example cache: client set+get, then the worker reads
        the message's cache key from the master's cache."""
        with Peers() as peers:
            _, db = self.start_master(peers)
            self.start_worker(peers, db, 'worker1')
            key = run_client('set', ' cached data ', '--server', 'server',
                             '--db', db)
            self.assertEqual(key.returncode, 0, key.stderr.decode())
            key = key.stdout.decode().strip()
            self.assertTrue(is_uuid4(key), key)
            self.assert_replies(run_client('get', key, '--server', 'server',
                                           '--db', db), [' cached data '])
            self.assert_replies(
                run_client('--server', 'server', '--db', db, '--function',
                           'server.cached', '--cache', key, '--mode', 'job',
                           '--messages', 3),
                ['worker1 cached data a message'] * 3)

    def test_worker_faults_and_message_limits(self):
        """PROTOCOL: "`b'0'` for an unknown method or an exception"; worker
        and master --messages end the processes with 0."""
        with Peers() as peers:
            master, db = self.start_master(peers, 'server', '--messages', 3)
            worker = self.start_worker(peers, db, 'solo', '--messages', 3)
            for function, reply in (('server.foo', 'solo processed a message'),
                                    ('server.fail', '0'),
                                    ('server.nope', '0')):
                self.assert_replies(run_client('--server', 'server', '--db', db,
                                               '--function', function), [reply])
            self.assertEqual(worker.finish(), 0, worker.text())
            self.assertEqual(master.finish(), 0, master.text())
            log = worker.text()
            self.assertIn(' - solo - ERROR - solo User function fail gave an '
                          'error', log)
            self.assertIn(' - solo - ERROR - Function nope was not found', log)

    def test_server_eval(self):
        """FEATURES 5, example single, and PROTOCOL's Server replies."""
        with Peers() as peers:
            server, db = self.start_server(peers)

            def call(*args, timeout=CLIENT_TIMEOUT):
                return run_client('--server', 'my_server', '--db', db, *args,
                                  timeout=timeout)
            self.assert_replies(call('--function', 'my_server.foo'),
                                ['you sent me a message'])
            blob = (bytes(range(256)) * 64).hex()
            self.assert_replies(call('--function', 'my_server.echo', '--hex',
                                     '--payload', blob), [blob])
            self.assert_replies(call('--function', 'my_server.fail'), ['0'])
            self.assert_replies(call('--function', 'other_server.foo'), ['0'])
            server.wait_for(' - my_server - ERROR - You called other_server, '
                            'instead of my_server')
            self.assert_replies(call('--function', 'my_server.foo',
                                     '--function', 'my_pipeline.bar'),
                                ['you sent me a message'])
            # An unknown Server method kills pylm's execution thread: the
            # message is lost (client timeout, exit 3), the peer goes on.
            self.assert_replies(call('--function', 'my_server.nope',
                                     timeout=1.5), [], code=3)
            self.assert_replies(call('--function', 'my_server.foo', '--mode',
                                     'job', '--messages', 2),
                                ['you sent me a message'] * 2)

    def test_cache_commands(self):
        """PROTOCOL's cache table and `Client.set(value, key)` with a
        session (prefix on set only)."""
        with Peers() as peers:
            _, db = self.start_server(peers)

            def cache(*args, session=None):
                extra = ['--session', session] if session else []
                return run_client(*args, '--server', 'my_server', '--db', db,
                                  *extra)
            self.assert_replies(cache('set', 'a value', 'my_key'), ['my_key'])
            self.assert_replies(cache('get', 'my_key'), ['a value'])
            self.assert_replies(cache('get', 'missing_key'), [''])
            self.assert_replies(cache('delete', 'my_key'), ['my_key'])
            self.assert_replies(cache('get', 'my_key'), [''])
            self.assert_replies(cache('delete', 'my_key'), ['my_key'])
            generated = cache('set', 'a value')
            self.assertTrue(is_uuid4(generated.stdout.decode().strip()))
            self.assert_replies(cache('set', 'a value', 'my_key',
                                      session='my_session'),
                                ['my_sessionmy_key'])
            self.assert_replies(cache('get', 'my_key', session='my_session'),
                                [''])
            self.assert_replies(cache('get', 'my_sessionmy_key'), ['a value'])
            self.assert_replies(cache('get', 'name'), ['my_server'])

    def test_wrong_server_name(self):
        """PROTOCOL: the client "raises "You are connecting to the wrong
        server" if it differs from its `server_name`"."""
        with Peers() as peers:
            _, db = self.start_server(peers)
            result = run_client('--server', 'other', '--db', db, '--function',
                                'other.foo')
            self.assertEqual(result.returncode, 1)
            self.assertEqual(result.stdout, b'')
            self.assertIn(b'You are connecting to the wrong server',
                          result.stderr)

    def test_nothing_listening_times_out_promptly(self):
        """pylm waits forever for its cache; the peers exit 3 in time (the
        unanswered REQ must not hold the exit: a bounded LINGER)."""
        [db] = free_addresses(1)
        started = time.monotonic()
        result = run_client('--server', 'server', '--db', db, '--function',
                            'server.foo', '--pb2-dir', w.pb2_dir(), timeout=1)
        self.assertEqual(result.returncode, 3, result.stderr.decode())
        self.assertIn(b'no reply from the cache', result.stderr)
        with Peers() as peers:
            worker = peers.start('pylm_worker.py', '--db', db, '--timeout', 1)
            self.assertEqual(worker.finish(), 3, worker.text())
        self.assertLess(time.monotonic() - started, WAIT)

    def test_cache_routing_ids_on_the_wire(self):
        """GOLDEN: "The Client's REQ socket to the cache sets its routing id
        to the Client's uuid; a Worker's REQ sets none (ZeroMQ's generated
        5-byte id, first byte 0)". A ROUTER plays the cache here."""
        import zmq
        [db] = free_addresses(1)
        context = w.new_context(linger_ms=0)
        router = context.socket(zmq.ROUTER)
        try:
            router.bind(db)

            def one_request(reply):
                self.assertTrue(router.poll(int(WAIT * 1000)), 'no request')
                identity, empty, frame = router.recv_multipart()
                router.send_multipart([identity, empty, reply])
                return identity, w.parse(frame)

            with Peers() as peers:
                client = peers.start('pylm_client.py', '--server', 'my_server',
                                     '--db', db, '--function', 'my_server.foo',
                                     '--timeout', WAIT)
                identity, request = one_request(b'not_my_server')
                self.assertEqual(identity, request.client.encode())
                self.assertTrue(is_uuid4(request.client))
                self.assertEqual(request.function, 'my_server.get')
                self.assertEqual(request.payload, b'name')
                self.assertEqual(client.finish(), 1, client.text())

                worker = peers.start('pylm_worker.py', '--db', db,
                                     '--timeout', WAIT, '--lifetime', WAIT)
                # Both addresses are asked before any is used; empty
                # answers end the worker with an error (no address).
                for key in (b'worker_push_address', b'worker_pull_address'):
                    identity, request = one_request(b'')
                    self.assertEqual((len(identity), identity[0]), (5, 0))
                    self.assertTrue(is_uuid4(request.client))
                    self.assertEqual(request.function, '_.get')
                    self.assertEqual(request.payload, key)
                self.assertEqual(worker.finish(), 1, worker.text())
        finally:
            context.destroy()

    def test_pylm_faults_stop_the_execution_only(self):
        """PROTOCOL: "kills the execution thread: no reply, nothing served
        after (the cache still answers)"."""
        with Peers() as peers:
            server, db = self.start_server(peers, '--pylm-faults')
            base = ('--server', 'my_server', '--db', db)
            self.assert_replies(run_client(*base, '--function',
                                           'my_server.nope', timeout=1.5),
                                [], code=3)
            self.assert_replies(run_client(*base, '--function', 'my_server.foo',
                                           timeout=1.5), [], code=3)
            self.assert_replies(run_client('get', 'name', *base), ['my_server'])
            server.wait_for(' - my_server - CRITICAL - Execution thread dies')


if __name__ == '__main__':
    unittest.main()
