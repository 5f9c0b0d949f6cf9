#!/usr/bin/python3
"""A minimal pylm 0.14.4-compatible Master (or Server), written from
PROTOCOL.md, so that palm's Client and Workers can be tested against Python.

  Master: pylm_master.py --name N --db ADDR --pull ADDR --pub ADDR
              --worker-pull ADDR --worker-push ADDR [--pipelined]
              [--messages N] [--lifetime S] [--pylm-faults]
              [--drop-unknown] [--log-level L] [--pb2-dir DIR]
  Server: pylm_master.py --server --name N --db ADDR --pull ADDR --pub ADDR
              [same options]

Master (PROTOCOL "Sockets, by server"): cache REP bound on --db (presets
name, db_address, pull_address, pub_address, worker_pull_address,
worker_push_address), PULL bound on --pull (clients), PUSH bound on
--worker-push (to workers; stamps a uuid4 `cache` when empty), PULL bound on
--worker-pull (from workers), PUB bound on --pub: two frames, topic = the
message's client (or the master's name with --pipelined, stage + 1). With no
worker connected, messages wait (pylm's master blocks) while the cache keeps
answering. --messages: exit after publishing N results. Logs as `root`.

Server (--server): cache REP (presets name, pull_address, pub_address), PULL,
PUB; it runs the methods itself: foo -> b'you sent me ' + payload, echo,
fail -> b'0'; "other.foo" -> b'0' and the log line "You called other,
instead of N". --messages: exit after N messages received. Logs as N.

Input that kills a pylm thread (an unknown Server method, a bad step, an
undecodable frame) is logged and the message lost; with --pylm-faults the
matching loop stops for good as pylm's thread does (the cache still
answers). The cache always answers (pylm's dies on a few inputs).

Exit 0 on SIGTERM/SIGINT or after --messages, 3 if --lifetime (default 300 s)
ends the run before --messages were reached, 1 on an error.
"""
import sys

sys.dont_write_bytecode = True

from collections import deque  # noqa: E402

import zmq  # noqa: E402

import pylm_wire as w  # noqa: E402


def build_parser():
    parser = w.new_parser(__doc__)
    parser.add_argument('--name', required=True, help="the server's name")
    parser.add_argument('--db', required=True, help='cache REP address')
    parser.add_argument('--pull', required=True, help='PULL from clients')
    parser.add_argument('--pub', required=True, help='PUB of the results')
    parser.add_argument('--worker-pull', help='PULL from workers (master)')
    parser.add_argument('--worker-push', help='PUSH to workers (master)')
    parser.add_argument('--server', action='store_true',
                        help='be a pylm Server instead of a Master')
    parser.add_argument('--pipelined', action='store_true',
                        help="publish under the own name, stage + 1")
    parser.add_argument('--messages', type=int, default=None,
                        help='exit after N results (master) or N messages '
                             '(server)')
    parser.add_argument('--lifetime', type=float, default=300.0,
                        help='exit after this many seconds (default 300)')
    parser.add_argument('--pylm-faults', action='store_true',
                        help="stop a loop on the input that kills pylm's "
                             'thread')
    parser.add_argument('--drop-unknown', action='store_true',
                        help='drop fields 7 and up when re-serializing')
    w.add_log_level_argument(parser)
    w.add_pb2_argument(parser)
    return parser


class Peer:
    """The sockets and loop shared by the Master and the Server modes."""

    def __init__(self, args, logger, presets):
        self.args = args
        self.logger = logger
        self.context = w.new_context(linger_ms=1000)
        self.poller = zmq.Poller()
        self.store = w.CacheStore(presets, logger)
        self.db = self.bind(zmq.REP, args.db)
        self.count = 0

    def bind(self, kind, address):
        socket = self.context.socket(kind)
        socket.bind(w.check_address(address))
        return socket

    def fault(self, what, error, socket):
        """Lose the message; with --pylm-faults stop reading `socket`."""
        if self.args.pylm_faults:
            self.logger.critical(f'{what} dies as in pylm: {error}')
            self.poller.unregister(socket)
        else:
            self.logger.error(f'{what}: message lost as in pylm: {error}')

    def run(self, on_event):
        """Poll until --messages, --lifetime or a signal; return the exit
        code."""
        stop = w.StopFlag()
        lifetime = w.Deadline(self.args.lifetime)
        limit = self.args.messages
        self.poller.register(self.db, zmq.POLLIN)
        try:
            while limit is None or self.count < limit:
                if stop or lifetime.expired():
                    break
                events = dict(self.poller.poll(lifetime.slice_ms()))
                if events.get(self.db, 0) & zmq.POLLIN:
                    self.db.send(self.store.handle(self.db.recv()))
                on_event(events)
            if stop:
                self.logger.info(f'Stopped by signal {stop.signal}')
                return w.EXIT_OK
            if limit is not None and self.count < limit:
                self.logger.error(f'Lifetime {self.args.lifetime} s over after '
                                  f'{self.count}/{limit} messages')
                return w.EXIT_TIMEOUT
            return w.EXIT_OK
        finally:
            # Bounded flush of the last PUB messages, then close everything.
            self.context.destroy()


def run_server(args):
    """PROTOCOL: Server | cache REP bind `db_address`; PULL bind
    `pull_address`; PUB bind `pub_address`."""
    logger = w.make_logger(args.name, args.log_level)
    peer = Peer(args, logger, {
        'name': args.name.encode('utf-8'),
        'pull_address': args.pull.encode('utf-8'),
        'pub_address': args.pub.encode('utf-8')})
    pull = peer.bind(zmq.PULL, args.pull)
    pub = peer.bind(zmq.PUB, args.pub)
    peer.poller.register(pull, zmq.POLLIN)
    core = w.ServerCore(args.name, w.SERVER_METHODS, logger, args.pipelined,
                        args.drop_unknown)
    logger.info(f'Server {args.name}: db {args.db}, pull {args.pull}, '
                f'pub {args.pub}')

    def on_event(events):
        if events.get(pull, 0) & zmq.POLLIN:
            frame = pull.recv()
            peer.count += 1
            try:
                topic, body = core.process(frame)
            except w.Fault as fault:
                peer.fault('Execution thread', fault, pull)
                return
            pub.send_multipart([topic.encode('utf-8'), body])

    return peer.run(on_event)


def run_master(args):
    """PROTOCOL: Master | cache REP bind `db_address`; PULL bind
    `pull_address`; PUSH bind `worker_push_address` (to workers); PULL bind
    `worker_pull_address` (from workers); PUB bind `pub_address`."""
    if not args.worker_pull or not args.worker_push:
        build_parser().error('a master needs --worker-pull and --worker-push')
    # FEATURES 1: "pylm's Master and Hub log as `root`".
    logger = w.make_logger('', args.log_level)
    peer = Peer(args, logger, {
        key: value.encode('utf-8') for key, value in (
            ('name', args.name), ('db_address', args.db),
            ('pull_address', args.pull), ('pub_address', args.pub),
            ('worker_pull_address', args.worker_pull),
            ('worker_push_address', args.worker_push))})
    pull = peer.bind(zmq.PULL, args.pull)
    to_workers = peer.bind(zmq.PUSH, args.worker_push)
    from_workers = peer.bind(zmq.PULL, args.worker_pull)
    pub = peer.bind(zmq.PUB, args.pub)
    peer.poller.register(pull, zmq.POLLIN)
    peer.poller.register(from_workers, zmq.POLLIN)
    pending = deque()   # frames waiting for a worker: pylm's PUSH blocks
    clients_alive = True  # False once the Pull part died (--pylm-faults)
    logger.info(f'Master {args.name}: db {args.db}, pull {args.pull}, pub '
                f'{args.pub}, worker_push {args.worker_push}, worker_pull '
                f'{args.worker_pull}')

    def on_event(events):
        nonlocal clients_alive
        if events.get(pull, 0) & zmq.POLLIN:
            try:
                pending.extend(w.master_scatter(pull.recv(), args.drop_unknown))
            except w.DecodeError as error:
                peer.fault('Pull part', error, pull)
                clients_alive = not args.pylm_faults
        if events.get(from_workers, 0) & zmq.POLLIN:
            try:
                results = w.master_gather(from_workers.recv(), args.name,
                                          args.pipelined, args.drop_unknown)
            except w.DecodeError as error:
                peer.fault('Pub part', error, from_workers)
                results = []
            for topic, body in results:
                pub.send_multipart([topic.encode('utf-8'), body])
                peer.count += 1
        while pending:
            try:
                to_workers.send(pending[0], zmq.NOBLOCK)
            except zmq.Again:
                break
            pending.popleft()
        # Read clients only when nothing waits (the back-pressure of pylm's
        # blocking PUSH); otherwise wait for room on the PUSH.
        if clients_alive:
            peer.poller.register(pull, 0 if pending else zmq.POLLIN)
        peer.poller.register(to_workers, zmq.POLLOUT if pending else 0)

    return peer.run(on_event)


def main(argv):
    args = build_parser().parse_args(argv)
    w.load_pb2(args.pb2_dir)
    try:
        return run_server(args) if args.server else run_master(args)
    except (ValueError, zmq.ZMQError) as error:
        sys.stderr.write(f'error: {error}\n')
        return w.EXIT_ERROR


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
