#include "common/thread_priority.h"

#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace distilld {

Status LowerCurrentThreadPriority(int increment) {
  if (increment <= 0) return Status::Ok();
  // PRIO_PROCESS with a thread id addresses that thread alone on Linux.
  const id_t tid = static_cast<id_t>(::syscall(SYS_gettid));
  errno = 0;
  const int current = ::getpriority(PRIO_PROCESS, tid);
  if (current == -1 && errno != 0) return Status::IoError(std::string("getpriority: ") + std::strerror(errno));
  if (::setpriority(PRIO_PROCESS, tid, current + increment) != 0) {
    return Status::IoError(std::string("setpriority: ") + std::strerror(errno));
  }
  return Status::Ok();
}

Status MakeCurrentThreadIdlePriority() {
  sched_param param{};
  param.sched_priority = 0;
  // pid 0 is the calling thread for sched_setscheduler on Linux.
  if (::sched_setscheduler(0, SCHED_IDLE, &param) != 0) {
    return Status::IoError(std::string("sched_setscheduler(SCHED_IDLE): ") + std::strerror(errno));
  }
  return Status::Ok();
}

}  // namespace distilld
