#!/usr/bin/python3
"""Play pylm 0.14.4's Worker on the wire (PROTOCOL.md "Cache service",
"Message flow"; FEATURES.md section 1, Worker).

  pylm_worker.py --db ADDR [--name N] [--push ADDR --pull ADDR]
      [--messages N] [--methods foo echo fail cached] [--delay S]
      [--timeout S] [--lifetime S] [--pylm-faults] [--drop-unknown]
      [--log-level L] [--pb2-dir DIR]

--push/--pull are pylm's Worker(push_address, pull_address): --push is the
master's worker_push_address (the worker PULLs from it), --pull the master's
worker_pull_address (the worker PUSHes to it). Each one not given is asked
from the master's cache (`_.get`, a REQ with no routing id); `name` is never
checked. The worker runs the second '.'-separated field of the current step
and replaces only the payload:

  foo    -> b'<name> processed ' + payload   (example parallel)
  echo   -> payload
  fail   -> raises, so b'0'
  cached -> b'<name>' + get(message.cache) + payload   (example cache)
  any other (or one left out of --methods) -> b'0'

Logs go to stdout in pylm's format `<asctime> - <name> - <LEVEL> - <message>`
(an empty --name is a uuid4 and logs as root, as in pylm), plus one line of
ours: "Ready: pulling from X, pushing to Y" once connected to the master.

A message pylm's Worker would die on (no '.' in the step, a stage out of
range) is logged and lost; with --pylm-faults the worker exits 1 as pylm's
process does. --drop-unknown drops fields 7 and up (a protobuf that does not
keep unknown fields). --delay sleeps before each reply.

Exit 0 after --messages messages or on SIGTERM/SIGINT, 3 if --lifetime
(default 300 s) ends the run before --messages were served, 1 on an error.
"""
import sys

sys.dont_write_bytecode = True

import zmq  # noqa: E402

import pylm_wire as w  # noqa: E402


def build_parser():
    parser = w.new_parser(__doc__)
    parser.add_argument('--name', default='',
                        help='worker name (default: its uuid4)')
    parser.add_argument('--db', required=True, help="the master's db_address")
    parser.add_argument('--push', help="master's worker_push_address (pulled)")
    parser.add_argument('--pull', help="master's worker_pull_address (pushed)")
    parser.add_argument('--messages', type=int, default=None,
                        help='exit after this many messages (default: none)')
    parser.add_argument('--methods', nargs='+',
                        default=sorted(w.WORKER_METHODS),
                        choices=sorted(w.WORKER_METHODS),
                        help='methods this worker has (default: all)')
    parser.add_argument('--delay', type=float, default=0.0,
                        help='seconds to sleep before each reply')
    parser.add_argument('--timeout', type=float, default=10.0,
                        help='bound on each cache reply and on connecting')
    parser.add_argument('--lifetime', type=float, default=300.0,
                        help='exit after this many seconds (default 300)')
    parser.add_argument('--pylm-faults', action='store_true',
                        help="die on the input that kills pylm's Worker")
    parser.add_argument('--drop-unknown', action='store_true',
                        help='drop fields 7 and up when re-serializing')
    w.add_log_level_argument(parser)
    w.add_pb2_argument(parser)
    return parser


def main(argv):
    args = build_parser().parse_args(argv)
    w.load_pb2(args.pb2_dir)
    stop = w.StopFlag()
    lifetime = w.Deadline(args.lifetime)
    worker_uuid = w.new_uuid()
    # FEATURES 1: "`name=''` (a uuid4 if empty)"; pylm's logger keeps the
    # empty name, i.e. root.
    name = args.name or worker_uuid
    logger = w.make_logger(args.name, args.log_level)
    context = w.new_context(linger_ms=2000)
    try:
        cache = w.CacheClient(context, args.db, '_', worker_uuid,
                              identity=False, timeout=args.timeout)
        push_address, pull_address = args.push, args.pull
        if not push_address:
            push_address = cache.get('worker_push_address').decode('utf-8')
            logger.info(f'Got worker push address: {push_address}')
        if not pull_address:
            pull_address = cache.get('worker_pull_address').decode('utf-8')
            logger.info(f'Got worker pull address: {pull_address}')
        pull = context.socket(zmq.PULL)
        push = context.socket(zmq.PUSH)
        push.connect(w.check_address(pull_address))
        if w.connect_and_wait(pull, push_address, w.Deadline(args.timeout),
                              stop):
            logger.info(f'Ready: pulling from {push_address}, pushing to '
                        f'{pull_address}')
        else:
            logger.warning(f'Not connected to {push_address} after '
                           f'{args.timeout} s; still trying')
        methods = {m: w.WORKER_METHODS[m] for m in args.methods}
        core = w.WorkerCore(name, methods, logger, cache, args.drop_unknown)
        served = 0
        while args.messages is None or served < args.messages:
            if stop or lifetime.expired():
                break
            if not pull.poll(lifetime.slice_ms(), zmq.POLLIN):
                continue
            frame = pull.recv()
            served += 1
            try:
                reply = core.process(frame)
            except w.Fault as fault:
                if args.pylm_faults:
                    logger.critical(f'Worker dies as pylm would: {fault}')
                    return w.EXIT_ERROR
                logger.error(f'Message lost as pylm would: {fault}')
                continue
            w.sleep_bounded(args.delay, stop)
            push.send(reply)
        if stop:
            logger.info(f'Stopped by signal {stop.signal} after {served} '
                        'messages')
            return w.EXIT_OK
        if args.messages is not None and served < args.messages:
            logger.error(f'Lifetime {args.lifetime} s over after {served}/'
                         f'{args.messages} messages')
            return w.EXIT_TIMEOUT
        return w.EXIT_OK
    except w.WireTimeout as error:
        logger.error(str(error))
        return w.EXIT_TIMEOUT
    except (ValueError, UnicodeDecodeError) as error:
        logger.error(str(error))
        return w.EXIT_ERROR
    finally:
        # Bounded flush of the last replies, then close everything.
        context.destroy()


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
