#pragma once
// Built into every test binary under TSan (through test_main.cpp): the rule
// of tests/tsan.supp (keep the two in step), read by TSan at start-up, so
// the threaded tests need no TSAN_OPTIONS. libzmq is not instrumented: its
// hand-offs of message buffers between threads look like races; only
// reports with a libzmq frame are suppressed.
#if defined(__SANITIZE_THREAD__)
extern "C" __attribute__((weak)) const char* __tsan_default_suppressions() {
  return "race:libzmq.so\n";
}
#endif
