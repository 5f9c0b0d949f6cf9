#!/usr/bin/python3
"""Play pylm 0.14.4's Client on the wire (PROTOCOL.md "Cache service",
"Message flow"; FEATURES.md section 2).

  pylm_client.py [call] --server NAME --db ADDR [--push ADDR] [--sub ADDR]
      [--session S] [--this-config] --function F [--function F2 ...]
      [--payload P] [--mode eval|job] [--messages N] [--send K]
      [--cache KEY] [--timeout S] [--settle S] [--hex]
  pylm_client.py set VALUE [KEY] --server NAME --db ADDR [--session S] ...
  pylm_client.py get KEY    --server NAME --db ADDR ...
  pylm_client.py delete KEY --server NAME --db ADDR ...

Like pylm's constructor it asks the cache for `name` (exit 1 with "You are
connecting to the wrong server" if it differs), then `pub_address` unless
--sub and `pull_address` unless --push (--this-config: no query). `call`
then sends as eval (one payload, --messages replies, default 1) or job (--send
payloads, default --messages, and --messages replies, topics checked); with
several --function the message goes down a pipeline. set/get/delete print the
cache's answer (set(value, key) order, a uuid4 key when KEY is omitted, the
session prefixes the key of set only).

Each reply payload (or cache value) is printed on its own line on stdout,
as utf-8 with backslashreplace, or as hex with --hex (which also makes VALUE
and --payload hex; keys stay text); logs go to stderr. Exit 0 when every
expected reply arrived, 1 on an error (wrong server, foreign topic), 3 on
timeout (--timeout bounds the whole run).

Slow joiner (unlike pylm, which sends at once on a fresh SUB): the SUB
subscribes to the client's uuid, connects, waits (bounded) until its ZMTP
handshake with the PUB has completed, then sleeps --settle (0.3 s, pylm
sleeps 0.5 s in its constructor) so the subscription reaches the PUB before
anything is sent. Nothing is ever resent.
"""
import sys

sys.dont_write_bytecode = True

import argparse  # noqa: E402
import time  # noqa: E402

import zmq  # noqa: E402

import pylm_wire as w  # noqa: E402

COMMANDS = ('call', 'set', 'get', 'delete')


class WrongServer(Exception):
    """pylm: ValueError('You are connecting to the wrong server')."""


class ForeignTopic(Exception):
    """pylm's job: ValueError('The client got a message that does not
    belong')."""


class Client:
    """pylm's Client: a uuid4, a REQ whose routing id is that uuid, config
    fetched from the server's cache (PROTOCOL: "A client gets `name` and
    raises ... then `pub_address` unless given `sub_address` and
    `pull_address` unless given `push_address` (`this_config=True`: no
    query)")."""

    def __init__(self, context, args, deadline, logger):
        self.context = context
        self.deadline = deadline
        self.logger = logger
        self.uuid = w.new_uuid()
        # PROTOCOL: "`pipeline` ... the client's session, else one uuid4 per
        # Client".
        self.pipeline = args.session or w.new_uuid()
        self.cache = w.CacheClient(context, args.db, args.server, self.uuid,
                                   identity=True, session=args.session,
                                   timeout=max(0.001, deadline.remaining()))
        self.push_address = args.push
        self.sub_address = args.sub
        if args.this_config:
            logger.warning('Not fetching config from the server')
            return
        logger.info('Fetching configuration from the server')
        name = self._get('name').decode('utf-8', 'replace')
        if name != args.server:
            raise WrongServer('You are connecting to the wrong server')
        if not self.sub_address:
            self.sub_address = self._get('pub_address').decode('utf-8')
            logger.info(f'CLIENT {self.uuid}: Got subscription address: '
                        f'{self.sub_address}')
        if not self.push_address:
            self.push_address = self._get('pull_address').decode('utf-8')
            logger.info(f'CLIENT {self.uuid}: Got push address: '
                        f'{self.push_address}')

    def _get(self, key):
        self.cache.timeout = max(0.001, self.deadline.remaining())
        return self.cache.get(key)

    def call(self, function, payloads, messages, cache, check_topic, emit,
             settle):
        """pylm's eval (check_topic=False) or job (True): send `payloads`,
        emit `messages` reply payloads. Returns when all came; raises
        WireTimeout on the deadline, ForeignTopic in job mode."""
        if not self.push_address or not self.sub_address:
            raise ValueError('--this-config needs --push and --sub')
        push = self.context.socket(zmq.PUSH)
        push.connect(w.check_address(self.push_address))
        sub = self.context.socket(zmq.SUB)
        sub.setsockopt_string(zmq.SUBSCRIBE, self.uuid)
        if not w.connect_and_wait(sub, self.sub_address, self.deadline):
            raise w.WireTimeout(f'no connection to the PUB at '
                                f'{self.sub_address}')
        w.sleep_bounded(min(settle, self.deadline.remaining()))
        frames = [w.serialize(w.client_message(function, payload,
                                               self.pipeline, self.uuid, cache))
                  for payload in payloads]
        sent = received = 0
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        while received < messages or sent < len(frames):
            if self.deadline.expired():
                raise w.WireTimeout(f'sent {sent}/{len(frames)}, got '
                                    f'{received}/{messages} replies')
            poller.register(push, zmq.POLLOUT if sent < len(frames) else 0)
            events = dict(poller.poll(self.deadline.slice_ms()))
            if events.get(push, 0) & zmq.POLLOUT:
                push.send(frames[sent], zmq.NOBLOCK)
                sent += 1
            if events.get(sub, 0) & zmq.POLLIN:
                parts = sub.recv_multipart()
                topic, body = parts[0], parts[-1]
                foreign = topic.decode('utf-8', 'replace') != self.uuid
                if check_topic and foreign:
                    raise ForeignTopic('The client got a message that does '
                                       'not belong')
                if received < messages:
                    emit(w.parse(body).payload)
                    received += 1


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--server', required=True,
                        help="the server's name (checked against its cache)")
    common.add_argument('--db', required=True, help="the server's db_address")
    common.add_argument('--push', help='pull_address to push to (else asked)')
    common.add_argument('--sub', help='PUB to subscribe to (else pub_address)')
    common.add_argument('--session', help='pylm session: the `pipeline` field '
                        'and the prefix of set keys')
    common.add_argument('--this-config', action='store_true',
                        help='ask the cache nothing (needs --push and --sub)')
    common.add_argument('--timeout', type=float, default=10.0,
                        help='bound on the whole run, seconds (default 10)')
    common.add_argument('--hex', action='store_true',
                        help='payloads/values in and out as hex')
    w.add_log_level_argument(common)
    w.add_pb2_argument(common)

    parser = w.new_parser(__doc__)
    commands = parser.add_subparsers(dest='command', required=True)
    call = commands.add_parser('call', parents=[common],
                               help='eval or job (the default command)')
    call.add_argument('--function', action='append', required=True,
                      help='"server.method"; repeat for a pipeline')
    call.add_argument('--payload', default='a message',
                      help="payload (default 'a message')")
    call.add_argument('--mode', choices=['eval', 'job'], default='eval')
    call.add_argument('--messages', type=int,
                      help='replies to await (eval: 1; job: --send)')
    call.add_argument('--send', type=int,
                      help='job: payloads to send (default --messages, else 1)')
    call.add_argument('--cache', default='', help="the message's cache field")
    call.add_argument('--settle', type=float, default=0.3,
                      help='pause after the SUB handshake, seconds (0.3)')
    set_ = commands.add_parser('set', parents=[common], help='set(value, key)')
    set_.add_argument('value')
    set_.add_argument('key', nargs='?', default=None)
    for name in ('get', 'delete'):
        commands.add_parser(name, parents=[common],
                            help=f'{name}(key)').add_argument('key')
    return parser


def parse_args(argv):
    """`call` is the default command: the brief's `--server ... --function`
    form works without naming it."""
    if argv and argv[0] not in COMMANDS and argv[0] not in ('-h', '--help'):
        argv = ['call'] + list(argv)
    args = build_parser().parse_args(argv)
    if args.command == 'call':
        if args.mode == 'eval':
            args.send = 1
            args.messages = 1 if args.messages is None else args.messages
        else:
            if args.send is None:
                args.send = 1 if args.messages is None else args.messages
            if args.messages is None:
                args.messages = args.send
        if args.messages < 0 or args.send < 0:
            build_parser().error('--messages and --send must be >= 0')
    return args


def main(argv):
    args = parse_args(argv)
    w.load_pb2(args.pb2_dir)
    decode = bytes.fromhex if args.hex else (lambda text: text.encode('utf-8'))

    def emit(data):
        """Print one payload or value (hex with --hex)."""
        emit_text(data.hex() if args.hex
                  else data.decode('utf-8', 'backslashreplace'))

    def emit_text(text):
        sys.stdout.write(text + '\n')
        sys.stdout.flush()

    # pylm's Client logs '%(asctime)s - %(levelname)s - %(message)s' to
    # stdout; here to stderr, so stdout holds only the replies.
    logger = w.make_logger('pylm_client', args.log_level, sys.stderr,
                           '%(asctime)s - %(levelname)s - %(message)s')
    deadline = w.Deadline(args.timeout)
    context = w.new_context(linger_ms=200)
    try:
        client = Client(context, args, deadline, logger)
        if args.command == 'call':
            start = time.monotonic()
            client.call(args.function, [decode(args.payload)] * args.send,
                        args.messages, args.cache, args.mode == 'job', emit,
                        args.settle)
            logger.info(f'{args.messages} replies in '
                        f'{time.monotonic() - start:.3f} s')
        elif args.command == 'set':
            emit_text(client.cache.set(decode(args.value), args.key))
        elif args.command == 'get':
            emit(client.cache.get(args.key))
        else:
            emit_text(client.cache.delete(args.key))
        return w.EXIT_OK
    except (WrongServer, ForeignTopic) as error:
        sys.stderr.write(f'ValueError: {error}\n')
        return w.EXIT_ERROR
    except ValueError as error:
        sys.stderr.write(f'error: {error}\n')
        return w.EXIT_ERROR
    except w.WireTimeout as error:
        sys.stderr.write(f'timeout after {args.timeout} s: {error}\n')
        return w.EXIT_TIMEOUT
    finally:
        context.destroy()


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
