#pragma once
// Moving a frame reference between the threads of one process without
// touching the pool: the slot keeps holding it, a handle stands for it while
// it sits in a ring.

#include <new>
#include <utility>

#include "palm/core/frame.hpp"

namespace palm::transport::zeromq {

// Takes the reference out of `frame` without releasing it; `frame` is empty
// after. The caller now owns the reference (held by frame.slot() of
// frame.pool()) and must hand it to a Frame again (Frame(pool, slot, h)) or
// release it. Frame has no member for this (give_away also unholds, which a
// hand-off inside one process does not need), so the Frame is moved into
// storage whose destructor never runs: it owns nothing but the reference we
// keep. (Core request: a Frame::detach() doing exactly this.)
inline Handle detach(Frame& frame) noexcept {
  alignas(Frame) unsigned char storage[sizeof(Frame)];
  const Frame* moved = ::new (static_cast<void*>(storage)) Frame(std::move(frame));
  return moved->handle();
}

}  // namespace palm::transport::zeromq
