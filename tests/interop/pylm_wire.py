"""pylm 0.14.4's wire behaviour, for palm's interoperability test peers.

pylm cannot be installed here, so palm's interop tests talk to small Python
peers (pylm_client.py, pylm_worker.py, pylm_master.py) that behave like
pylm's processes on the wire. This module is everything they share: how pylm
builds, reads and answers a PalmMessage, its cache service, and the process
plumbing (bounded waits, SIGTERM, loopback-only addresses).

Each behaviour's docstring quotes the sentence of ../../shared/PROTOCOL.md
("PROTOCOL") or of golden/README.md ("GOLDEN") it follows.

Interpreter: Debian's /usr/bin/python3 with python3-zmq and python3-protobuf.
The PalmMessage class comes from palm_pb2.py, found in --pb2-dir, else in
$PALM_PB2_DIR, else generated with protoc from proto/palm.proto into a
temporary directory (removed at exit).
"""

import argparse
import atexit
import importlib.util
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path

import zmq
from google.protobuf.message import DecodeError
from zmq.utils.monitor import recv_monitor_message

# Exit codes shared by every peer.
EXIT_OK = 0
EXIT_ERROR = 1    # wrong server, foreign topic, a fault with --pylm-faults
EXIT_USAGE = 2    # argparse's own code
EXIT_TIMEOUT = 3  # an awaited reply (or --messages) did not come in time

PYLM_FIELDS = 6   # PalmMessage fields 1-6 are pylm's; 7 and up are palm's
POLL_MS = 100     # every blocking wait is sliced so SIGTERM is seen promptly

_REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PROTO = _REPO_ROOT / 'proto' / 'palm.proto'

# ---------------------------------------------------------------------------
# palm_pb2

_pb2 = None
_pb2_dir = None


def add_pb2_argument(parser):
    """Add --pb2-dir (the directory holding palm_pb2.py) to a parser."""
    parser.add_argument(
        '--pb2-dir', default=None,
        help='directory holding palm_pb2.py (default: $PALM_PB2_DIR, else '
             'generated with protoc from proto/palm.proto into a temp dir)')


def _generate_pb2():
    """Run protoc on palm.proto into a fresh temp dir; return that dir."""
    proto = Path(os.environ.get('PALM_PROTO', DEFAULT_PROTO))
    if not proto.is_file():
        raise RuntimeError(f'{proto} not found: give --pb2-dir or PALM_PB2_DIR')
    out = tempfile.mkdtemp(prefix='palm_pb2_')
    atexit.register(shutil.rmtree, out, True)
    subprocess.run(['protoc', f'--python_out={out}', '-I', str(proto.parent),
                    str(proto)], check=True, timeout=60)
    return out


def load_pb2(pb2_dir=None):
    """Load palm_pb2 once: pb2_dir, else $PALM_PB2_DIR, else protoc output."""
    global _pb2, _pb2_dir
    if _pb2 is not None:
        return _pb2
    directory = pb2_dir or os.environ.get('PALM_PB2_DIR') or _generate_pb2()
    path = Path(directory) / 'palm_pb2.py'
    if not path.is_file():
        raise RuntimeError(f'no palm_pb2.py in {directory}')
    spec = importlib.util.spec_from_file_location('palm_pb2', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _pb2, _pb2_dir = module, str(Path(directory).resolve())
    return _pb2


def pb2_dir():
    """The directory palm_pb2 was loaded from (to hand to child peers)."""
    load_pb2()
    return _pb2_dir


def new_message(**fields):
    """A PalmMessage with the given fields set."""
    return load_pb2().PalmMessage(**fields)


def parse(frame):
    """Parse one frame; raises DecodeError."""
    message = new_message()
    message.ParseFromString(frame)
    return message


def serialize(message, drop_unknown=False):
    """Serialize canonically.

    GOLDEN: "an encoder that writes present fields in number order and skips
    defaults matches pylm byte for byte". PROTOCOL: "whether [fields 7 and up]
    survive a pylm Server or Worker (which re-serializes) depends on its
    protobuf version": protobuf 4.21 keeps them (the default here);
    drop_unknown=True plays a protobuf that drops them.
    """
    if drop_unknown:
        for field in message.DESCRIPTOR.fields:
            if field.number > PYLM_FIELDS:
                message.ClearField(field.name)
        message.DiscardUnknownFields()
    return message.SerializeToString()


def wire_fields(frame):
    """The top-level field numbers of a protobuf frame, in wire order.

    GOLDEN: "`wire fields` gives the field numbers present in the frame, in
    wire order." Raises ValueError on a malformed frame.
    """
    def varint(pos):
        value = shift = 0
        while True:
            if pos >= len(frame) or shift > 63:
                raise ValueError('truncated varint')
            byte = frame[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value, pos

    numbers, pos = [], 0
    while pos < len(frame):
        key, pos = varint(pos)
        wire_type = key & 7
        if wire_type == 0:
            _, pos = varint(pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 2:
            length, pos = varint(pos)
            pos += length
        elif wire_type == 5:
            pos += 4
        else:
            raise ValueError(f'unsupported wire type {wire_type}')
        if pos > len(frame):
            raise ValueError('field runs past the end of the frame')
        numbers.append(key >> 3)
    return numbers


# ---------------------------------------------------------------------------
# Building messages


def new_uuid():
    """A fresh uuid4 as pylm writes it: str(uuid4()), 36 characters."""
    return str(uuid.uuid4())


def join_function(function):
    """PROTOCOL: "`function` (a list joined with spaces)"; a str is kept."""
    return function if isinstance(function, str) else ' '.join(function)


def client_message(function, payload, pipeline, client, cache=''):
    """One message of a Client's eval/job.

    PROTOCOL: "each message has `function` (a list joined with spaces),
    `stage = 0`, `pipeline`, `client` = its uuid, `payload`, `cache` if
    non-empty." `pipeline` is "the client's session, else one uuid4 per
    Client" (the caller keeps that one value for all its messages).
    """
    message = new_message(function=join_function(function), stage=0,
                          pipeline=pipeline, client=client, payload=payload)
    if cache:
        message.cache = cache
    return message


def cache_request(server, client, op, key=None, value=None, session=None):
    """One cache request, as a pylm Client (server = its server_name) or a
    Worker (server = '_') builds it.

    GOLDEN: "Cache requests carry a fresh uuid4 in `pipeline` for every
    request, even with a session"; "`function` is `my_server.<op>` from a
    Client, `_.<op>` from a Worker; the key travels in `payload` for get and
    delete, in `cache` for set (whose value is in `payload`)". PROTOCOL:
    "`Client.set(value, key)` needs bytes; with a `session` the key sent is
    session+key (no separator), but `get`/`delete` do not prefix."
    """
    message = new_message(pipeline=new_uuid(), client=client, stage=0,
                          function=f'{server}.{op}')
    if op == 'set':
        if not isinstance(value, bytes):
            raise TypeError(f'First argument {value!r} must be of type <bytes>')
        message.payload = value
        if key:
            message.cache = (session + key) if session else key
    else:
        message.payload = key.encode('utf-8')
    return message


# ---------------------------------------------------------------------------
# Reading a step


class Fault(Exception):
    """Input that kills the pylm thread or process handling it.

    PROTOCOL: "An unknown method, a step without exactly one '.', a stage out
    of range, or a non-bytes result (None too) kills the execution thread"
    (Server); "a non-bytes result, a step without '.' or a bad stage kills
    the worker and loses the message" (Worker). The peers lose the message
    and go on, or die as pylm does with --pylm-faults.
    """


def current_step(message):
    """PROTOCOL: "if `function` has a space, `function.split()[stage]`, else
    all of `function` whatever `stage` is." Raises Fault on a bad stage."""
    if ' ' not in message.function:
        return message.function
    steps = message.function.split()
    if not 0 <= message.stage < len(steps):
        raise Fault(f'stage {message.stage} out of range for '
                    f'{message.function!r}')
    return steps[message.stage]


def server_step(message):
    """PROTOCOL: "Server, Pipeline and Sink split it at '.' into exactly
    `server` and `method`". Returns (server, method); Fault otherwise."""
    parts = current_step(message).split('.')
    if len(parts) != 2:
        raise Fault(f'step {current_step(message)!r} has not exactly one "."')
    return parts[0], parts[1]


def worker_step(message):
    """PROTOCOL: "A Worker runs the second '.'-separated field and ignores
    the server part." Fault when there is no '.'."""
    parts = current_step(message).split('.')
    if len(parts) < 2:
        raise Fault(f'step {current_step(message)!r} has no "."')
    return parts[1]


def handle_stream(message, name, pipelined):
    """pylm's default handle_stream; returns the topic, edits `stage`.

    PROTOCOL: "pipelined, topic = own name and `stage += 1`; else topic =
    `client`, stage unchanged".
    """
    if pipelined:
        message.stage += 1
        return name
    return message.client


# ---------------------------------------------------------------------------
# User methods (pylm calls them by name with getattr; here, tables)


def _echo(ctx, payload):
    """FEATURES 1: "built-in `echo(payload)` returns the payload unchanged"."""
    return payload


def _fail(ctx, payload):
    """A method that raises: PROTOCOL "A method exception gives `b'0'`"."""
    raise RuntimeError('fail always raises')


def _worker_foo(ctx, payload):
    """FEATURES 5, example parallel: `b'<name> processed a message'`."""
    return ctx.name.encode('utf-8') + b' processed ' + payload


def _worker_cached(ctx, payload):
    """FEATURES 5, example cache: `b'workerN cached data a message'`: the
    worker reads the message's `cache` key from the master's cache."""
    return ctx.name.encode('utf-8') + ctx.get(ctx.message.cache) + payload


def _server_foo(ctx, payload):
    """FEATURES 5, example single: `b'you sent me a message'`."""
    return b'you sent me ' + payload


WORKER_METHODS = {'foo': _worker_foo, 'echo': _echo, 'fail': _fail,
                  'cached': _worker_cached}
SERVER_METHODS = {'foo': _server_foo, 'echo': _echo, 'fail': _fail}


class WorkerCore:
    """What a pylm Worker does with one frame from the master.

    PROTOCOL: "A worker replaces only the payload and pushes the message
    back: `b'0'` for an unknown method or an exception". GOLDEN: "the
    Worker's frame is the Master's with only `payload` replaced".
    `name`, `message` and `get` are what pylm's methods see on `self`.
    """

    def __init__(self, name, methods, logger, cache=None, drop_unknown=False):
        self.name = name
        self.methods = methods
        self.logger = logger
        self.cache = cache
        self.drop_unknown = drop_unknown
        self.message = None

    def get(self, key):
        """The Worker's `get(key)` on the master's cache."""
        if self.cache is None:
            raise RuntimeError('this worker has no cache client')
        return self.cache.get(key)

    def process(self, frame):
        """Return the frame to push back; raises Fault as pylm would die."""
        result = b'0'
        try:
            self.message = parse(frame)
        except DecodeError:
            self.logger.error('Message could not be decoded')
            self.message = new_message()
        else:
            method = worker_step(self.message)
            function = self.methods.get(method)
            if function is None:
                self.logger.error(f'Function {method} was not found')
            else:
                try:
                    result = function(self, self.message.payload)
                except Exception:
                    self.logger.error(
                        f'{self.name} User function {method} gave an error')
                    first_line = traceback.format_exc().splitlines()[0]
                    self.logger.exception(first_line)
                    result = b'0'
        if not isinstance(result, bytes):
            raise Fault(f'method returned {type(result).__name__}, not bytes')
        self.message.payload = result
        return serialize(self.message, self.drop_unknown)


class ServerCore:
    """What a pylm Server (or a to_client Pipeline) does with one frame.

    PROTOCOL: "Server: puts the method's result in `payload`, then
    `handle_stream` ... publishes. A method exception gives `b'0'`; an
    undecodable message goes out as `b'0'`, topic empty (lost)." and
    "check `server` is their name (else log "You called X, instead of Y" and
    reply `b'0'`)".
    """

    def __init__(self, name, methods, logger, pipelined=False,
                 drop_unknown=False):
        self.name = name
        self.methods = methods
        self.logger = logger
        self.pipelined = pipelined
        self.drop_unknown = drop_unknown
        self.message = None

    def process(self, frame):
        """Return (topic, body) to publish; raises Fault as pylm would die."""
        result = b'0'
        try:
            self.message = parse(frame)
        except DecodeError:
            self.logger.error('Message could not be decoded')
            self.message = new_message(payload=b'0')
            return '', serialize(self.message, self.drop_unknown)
        server, method = server_step(self.message)
        if server != self.name:
            self.logger.error(f'You called {server}, instead of {self.name}')
        else:
            function = self.methods.get(method)
            if function is None:
                raise Fault(f'Function {method} was not found')
            try:
                result = function(self, self.message.payload)
            except Exception:
                self.logger.exception('User function gave an error')
                result = b'0'
        if not isinstance(result, bytes):
            raise Fault(f'method returned {type(result).__name__}, not bytes')
        self.message.payload = result
        topic = handle_stream(self.message, self.name, self.pipelined)
        return topic, serialize(self.message, self.drop_unknown)


# ---------------------------------------------------------------------------
# Master


def master_scatter(frame, drop_unknown=False):
    """The frames a Master pushes to its workers for one client frame.

    PROTOCOL: "`scatter` yields zero or more messages per input ...; each
    gets a uuid4 `cache` if empty and is pushed to the workers". GOLDEN: "A
    master inserts its `cache` uuid between `function` and `payload`" (the
    canonical encoding does that). pylm's default scatter yields the input.
    Raises DecodeError on a bad frame.
    """
    message = parse(frame)
    if not message.cache:
        message.cache = new_uuid()
    return [serialize(message, drop_unknown)]


def master_gather(frame, name, pipelined, drop_unknown=False):
    """The (topic, body) pairs a Master publishes for one worker frame.

    PROTOCOL: "Per result, `gather` yields zero or more messages, each goes
    through `handle_stream` (master's name as topic if pipelined), out."
    GOLDEN: "the Master's PUB body is byte-identical to the Worker's frame".
    pylm's default gather yields the input. Raises DecodeError.
    """
    message = parse(frame)
    topic = handle_stream(message, name, pipelined)
    return [(topic, serialize(message, drop_unknown))]


# ---------------------------------------------------------------------------
# Cache service and cache client


class CacheStore:
    """pylm's cache service (the REP on `db_address`), minus its crashes.

    PROTOCOL: "The request is a `PalmMessage`; the instruction is
    `function.split('.')[1]` ... The reply is raw bytes." set: "`cache`
    field, or a new uuid4 if empty; value = `payload`" -> "the key, utf-8";
    get: "`payload` (utf-8)" -> "the value; `b''` if missing or empty";
    delete -> "the key, utf-8"; "anything else" -> `b''`. "pylm's cache
    thread dies ... on `delete` of a missing key, a `function` without '.',
    or an undecodable request; palm always answers": so does this store.
    """

    def __init__(self, presets=None, logger=None):
        self.data = {key: value for key, value in (presets or {}).items()}
        self.logger = logger

    def handle(self, frame):
        """Answer one request frame with the raw reply bytes."""
        try:
            message = parse(frame)
            instruction = message.function.split('.')[1]
        except (DecodeError, IndexError):
            self._log('Cache: unreadable request, answering empty')
            return b''
        if instruction == 'set':
            key = message.cache or new_uuid()
            self.data[key] = message.payload
            return key.encode('utf-8')
        try:
            key = message.payload.decode('utf-8')
        except UnicodeDecodeError:
            self._log('Cache: key is not utf-8, answering empty')
            return b''
        if instruction == 'get':
            return self.data.get(key) or b''
        if instruction == 'delete':
            self.data.pop(key, None)
            return key.encode('utf-8')
        return b''

    def _log(self, text):
        if self.logger is not None:
            self.logger.warning(text)


class WireTimeout(Exception):
    """An awaited reply did not arrive in time (exit code 3)."""


class CacheClient:
    """A pylm Client's or Worker's REQ to a cache, with a bounded wait.

    GOLDEN: "The Client's REQ socket to the cache sets its routing id to the
    Client's uuid; a Worker's REQ sets none". Pass identity=True for a
    Client. pylm waits forever for the reply; this raises WireTimeout.
    """

    def __init__(self, context, db_address, server, client, identity,
                 session=None, timeout=10.0):
        self.db_address = check_address(db_address)
        self.server = server
        self.client = client
        self.session = session
        self.timeout = timeout
        self.socket = context.socket(zmq.REQ)
        # Nothing to flush: a request either got its reply or timed out.
        self.socket.setsockopt(zmq.LINGER, 0)
        if identity:
            self.socket.setsockopt(zmq.IDENTITY, client.encode('utf-8'))
        self.socket.connect(self.db_address)

    def request(self, message):
        """Send one request, return the raw reply (bounded by timeout)."""
        self.socket.send(serialize(message))
        if not self.socket.poll(int(self.timeout * 1000), zmq.POLLIN):
            raise WireTimeout(
                f'no reply from the cache at {self.db_address} within '
                f'{self.timeout} s to {message.function} '
                f'{message.payload[:64]!r}')
        return self.socket.recv()

    def set(self, value, key=None):
        """`set(value, key=None) -> key` (value first, as pylm)."""
        return self.request(cache_request(self.server, self.client, 'set',
                                          key=key, value=value,
                                          session=self.session)).decode('utf-8')

    def get(self, key):
        """`get(key) -> bytes`, b'' when missing."""
        return self.request(cache_request(self.server, self.client, 'get',
                                          key=key))

    def delete(self, key):
        """`delete(key) -> key`."""
        return self.request(cache_request(self.server, self.client, 'delete',
                                          key=key)).decode('utf-8')


# ---------------------------------------------------------------------------
# Process plumbing

_LOOPBACK = re.compile(r'^tcp://127\.0\.0\.1:([0-9]{1,5})$')


def check_address(address):
    """Only tcp://127.0.0.1:PORT is bound or connected to; ValueError else."""
    match = _LOOPBACK.match(address or '')
    if not match or not 0 < int(match.group(1)) < 65536:
        raise ValueError(f'{address!r}: only tcp://127.0.0.1:PORT is allowed')
    return address


LOG_FORMAT = '%(asctime)s - %(name)s - %(levelname)s - %(message)s'


def make_logger(name, level='INFO', stream=None, fmt=LOG_FORMAT):
    """A logger in pylm's format (FEATURES 1: "`<asctime> - <name> -
    <LEVEL> - <message>` to stdout"). An empty name is the root logger, as
    `logging.getLogger(name='')` is in pylm (its Worker built with name='')."""
    logger = logging.getLogger(name or None)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter(fmt))
    logger.addHandler(handler)
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    logger.propagate = False
    return logger


def add_log_level_argument(parser, default='INFO'):
    parser.add_argument('--log-level', default=default,
                        choices=['DEBUG', 'INFO', 'WARNING', 'ERROR',
                                 'CRITICAL'],
                        help=f'Python logging level (default {default})')


class StopFlag:
    """Set by SIGTERM or SIGINT; the peers' loops check it every POLL_MS."""

    def __init__(self):
        self.signal = None
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, signum, frame):
        self.signal = signum

    def __call__(self):
        return self.signal is not None

    __bool__ = __call__


class Deadline:
    """A point in time; `remaining_ms` slices waits so they stay bounded."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self):
        return max(0.0, self.end - time.monotonic())

    def expired(self):
        return self.remaining() <= 0.0

    def slice_ms(self, cap_ms=POLL_MS):
        return max(1, min(cap_ms, int(self.remaining() * 1000)))


def new_context(linger_ms):
    """A zmq Context whose sockets all get a bounded LINGER.

    Set on the context, not only in destroy(): a socket garbage-collected
    first (e.g. when a constructor raised) is closed by pyzmq with the
    socket's own LINGER, which would otherwise be infinite and hang term().
    """
    context = zmq.Context()
    context.setsockopt(zmq.LINGER, linger_ms)
    return context


def connect_and_wait(socket, address, deadline, stop=None):
    """Connect and wait (bounded) until the ZMTP handshake has completed.

    Used against the slow joiner: PROTOCOL "Both send at once on a fresh
    SUB: a fast server's reply is often lost (slow joiner)". Returns True
    once connected, False on deadline or stop (the connect stays pending).
    """
    monitor = socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    try:
        socket.connect(check_address(address))
        while not deadline.expired() and not (stop and stop()):
            if monitor.poll(deadline.slice_ms(), zmq.POLLIN):
                event = recv_monitor_message(monitor)
                if event['event'] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    return True
        return False
    finally:
        socket.disable_monitor()
        monitor.close(linger=0)


def sleep_bounded(seconds, stop=None):
    """Sleep in POLL_MS slices, returning early on stop."""
    deadline = Deadline(seconds)
    while not deadline.expired() and not (stop and stop()):
        time.sleep(deadline.slice_ms() / 1000.0)


def new_parser(prog_doc):
    """An argparse parser whose description is the script's docstring."""
    return argparse.ArgumentParser(
        description=prog_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter)
