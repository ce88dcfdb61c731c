#include "write_trap.h"
#include "js_args.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../../kernel-patches/uapi/introvisor_trap.h"

static_assert(sizeof(introvisor_trap_record) == 112, "introvisor_trap_record is 112 bytes (uapi)");
static_assert(sizeof(introvisor_trap_range) == 24, "introvisor_trap_range is 24 bytes (uapi)");

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

namespace {

using introvisor::Hex;
using introvisor::ToU64;

constexpr uint32_t kMaxReadRecords = 4096;

std::string ErrnoName(int e) {
  const char* n = strerrorname_np(e);
  return n ? n : "E" + std::to_string(e);
}

// An Error the TS adapter can classify: .code (errno name), .errno, .step.
[[noreturn]] void ThrowErrno(const Napi::Env& env, const std::string& step, const std::string& what, int e) {
  Napi::Error err = Napi::Error::New(env, what + ": " + ErrnoName(e) + " (" + strerror(e) + ")");
  err.Set("code", Napi::String::New(env, ErrnoName(e)));
  err.Set("errno", Napi::Number::New(env, e));
  err.Set("step", Napi::String::New(env, step));
  throw err;
}

uint32_t ToU32(const Napi::Env& env, const Napi::Value& v, const char* what, uint32_t lo, uint32_t hi) {
  uint64_t r = ToU64(env, v, what);
  if (r < lo || r > hi)
    throw Napi::RangeError::New(env, std::string(what) + " must be in " + std::to_string(lo) + ".." + std::to_string(hi));
  return static_cast<uint32_t>(r);
}

// The fd number of "anon_inode:kvm-vm" in /proc/<pid>/fd, -1 when none, -2 when the
// directory cannot be read (errno set).
int FindVmFd(int pid) {
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = opendir(dir.c_str());
  if (!d) return -2;
  int found = -1;
  while (dirent* de = readdir(d)) {
    char* end = nullptr;
    long n = strtol(de->d_name, &end, 10);
    if (end == de->d_name || *end != 0 || n < 0 || n > 1 << 30) continue;
    char target[64];
    ssize_t len = readlinkat(dirfd(d), de->d_name, target, sizeof target - 1);
    if (len <= 0) continue;
    target[len] = 0;
    if (strcmp(target, "anon_inode:kvm-vm") == 0) {
      found = static_cast<int>(n);
      break;
    }
  }
  closedir(d);
  return found;
}

// Our own copy must be the VM too (the pid could have been reused between the scan and the getfd).
bool IsVmFd(int fd) {
  char link[64], target[64];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t len = readlink(link, target, sizeof target - 1);
  if (len <= 0) return false;
  target[len] = 0;
  return strcmp(target, "anon_inode:kvm-vm") == 0;
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

}  // namespace

Napi::Function WriteTrap::Init(Napi::Env env) {
  return DefineClass(env, "WriteTrap",
                     {
                         InstanceAccessor<&WriteTrap::GetFd>("fd"),
                         InstanceAccessor<&WriteTrap::GetVmFdNumber>("qemuVmFd"),
                         InstanceMethod<&WriteTrap::AddRange>("addRange"),
                         InstanceMethod<&WriteTrap::DelRange>("delRange"),
                         InstanceMethod<&WriteTrap::List>("list"),
                         InstanceMethod<&WriteTrap::Stats>("stats"),
                         InstanceMethod<&WriteTrap::ReadRecords>("readRecords"),
                         InstanceMethod<&WriteTrap::Close>("close"),
                     });
}

WriteTrap::WriteTrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<WriteTrap>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1) throw Napi::TypeError::New(env, "WriteTrap(qemuPid, ringRecords?): qemuPid missing");
  pid_ = static_cast<int>(ToU32(env, info[0], "qemuPid", 1, 0x3fffffff));
  uint32_t ring = info.Length() > 1 && !info[1].IsUndefined()
                      ? ToU32(env, info[1], "ringRecords", 0, INTROVISOR_TRAP_MAX_RING)
                      : 0;
  const std::string who = "write trap for QEMU pid " + std::to_string(pid_);

  // pidfd first: it pins the process we then look into.
  Fd pidfd;
  pidfd.fd = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
  if (pidfd.fd < 0) ThrowErrno(env, "pidfd_open", who + ": pidfd_open", errno);
  int remote = FindVmFd(pid_);
  if (remote == -2) ThrowErrno(env, "find-vm-fd", who + ": cannot read /proc/" + std::to_string(pid_) + "/fd", errno);
  if (remote < 0) {
    Napi::Error err = Napi::Error::New(env, who + ": the process holds no anon_inode:kvm-vm fd (not a KVM guest, e.g. TCG)");
    err.Set("code", Napi::String::New(env, "ENOVMFD"));
    err.Set("errno", Napi::Number::New(env, 0));
    err.Set("step", Napi::String::New(env, "find-vm-fd"));
    throw err;
  }
  remote_vm_fd_ = remote;
  Fd vm;
  vm.fd = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd.fd, remote, 0));
  if (vm.fd < 0) ThrowErrno(env, "pidfd_getfd", who + ": pidfd_getfd of its fd " + std::to_string(remote), errno);
  if (!IsVmFd(vm.fd)) {
    Napi::Error err = Napi::Error::New(env, who + ": fd " + std::to_string(remote) + " is no longer a KVM VM (process changed)");
    err.Set("code", Napi::String::New(env, "ESTALE"));
    err.Set("errno", Napi::Number::New(env, ESTALE));
    err.Set("step", Napi::String::New(env, "pidfd_getfd"));
    throw err;
  }
  Fd kvm;
  kvm.fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm.fd < 0) ThrowErrno(env, "open-kvm", who + ": open /dev/kvm", errno);
  introvisor_trap_attach a{};
  a.vm_fd = vm.fd;
  a.ring_records = ring;
  int trap = ioctl(kvm.fd, INTROVISOR_TRAP_ATTACH, &a);
  if (trap < 0) ThrowErrno(env, "attach", who + ": INTROVISOR_TRAP_ATTACH", errno);
  // The trap fd holds its own reference on the VM: the duplicated VM fd can go.
  int fl = fcntl(trap, F_GETFL);
  if (fl < 0 || fcntl(trap, F_SETFL, fl | O_NONBLOCK) != 0 || fcntl(trap, F_SETFD, FD_CLOEXEC) != 0) {
    int e = errno;
    close(trap);
    ThrowErrno(env, "attach", who + ": fcntl on the trap fd", e);
  }
  fd_ = trap;
}

WriteTrap::~WriteTrap() {
  if (fd_ >= 0) close(fd_);
}

int WriteTrap::Live(const Napi::Env& env, const char* what) const {
  if (fd_ < 0) throw Napi::Error::New(env, std::string("write trap for QEMU pid ") + std::to_string(pid_) + ": " + what + " after close()");
  return fd_;
}

Napi::Value WriteTrap::GetFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_); }
Napi::Value WriteTrap::GetVmFdNumber(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), remote_vm_fd_); }

// addRange(gpa, len, action)
Napi::Value WriteTrap::AddRange(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Live(env, "addRange");
  if (info.Length() < 3) throw Napi::TypeError::New(env, "addRange(gpa, len, action)");
  introvisor_trap_range r{};
  r.gpa = ToU64(env, info[0], "gpa");
  r.len = ToU64(env, info[1], "len");
  r.action = ToU32(env, info[2], "action", INTROVISOR_TRAP_ACTION_DROP, INTROVISOR_TRAP_ACTION_GP);
  if (r.len == 0 || r.len > INTROVISOR_TRAP_MAX_RANGE_LEN || r.gpa + r.len < r.gpa)
    throw Napi::RangeError::New(env, "addRange: len must be 1..16 MiB and the range must not wrap");
  if (ioctl(fd, INTROVISOR_TRAP_ADD_RANGE, &r) != 0)
    ThrowErrno(env, "add-range", "write trap for QEMU pid " + std::to_string(pid_) + ": ADD_RANGE", errno);
  return env.Undefined();
}

// delRange(gpa, len)
Napi::Value WriteTrap::DelRange(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Live(env, "delRange");
  if (info.Length() < 2) throw Napi::TypeError::New(env, "delRange(gpa, len)");
  introvisor_trap_range r{};
  r.gpa = ToU64(env, info[0], "gpa");
  r.len = ToU64(env, info[1], "len");
  if (ioctl(fd, INTROVISOR_TRAP_DEL_RANGE, &r) != 0)
    ThrowErrno(env, "del-range", "write trap for QEMU pid " + std::to_string(pid_) + ": DEL_RANGE", errno);
  return env.Undefined();
}

// list(): BigUint64Array of [gpa, len, action]*
Napi::Value WriteTrap::List(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Live(env, "list");
  std::vector<introvisor_trap_range> ranges(INTROVISOR_TRAP_MAX_RANGES);
  introvisor_trap_list l{};
  l.count = INTROVISOR_TRAP_MAX_RANGES;
  l.ranges = reinterpret_cast<uintptr_t>(ranges.data());
  if (ioctl(fd, INTROVISOR_TRAP_LIST, &l) != 0)
    ThrowErrno(env, "list", "write trap for QEMU pid " + std::to_string(pid_) + ": LIST", errno);
  uint32_t n = l.count < INTROVISOR_TRAP_MAX_RANGES ? l.count : INTROVISOR_TRAP_MAX_RANGES;
  auto out = Napi::BigUint64Array::New(env, 3 * static_cast<size_t>(n));
  for (uint32_t i = 0; i < n; i++) {
    out[3 * i] = ranges[i].gpa;
    out[3 * i + 1] = ranges[i].len;
    out[3 * i + 2] = ranges[i].action;
  }
  return out;
}

Napi::Value WriteTrap::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Live(env, "stats");
  introvisor_trap_stats s{};
  if (ioctl(fd, INTROVISOR_TRAP_GET_STATS, &s) != 0)
    ThrowErrno(env, "stats", "write trap for QEMU pid " + std::to_string(pid_) + ": GET_STATS", errno);
  Napi::Object o = Napi::Object::New(env);
  o.Set("refused", Napi::BigInt::New(env, static_cast<uint64_t>(s.refused)));
  o.Set("logged", Napi::BigInt::New(env, static_cast<uint64_t>(s.logged)));
  o.Set("lost", Napi::BigInt::New(env, static_cast<uint64_t>(s.lost)));
  o.Set("queued", Napi::Number::New(env, s.queued));
  o.Set("ringRecords", Napi::Number::New(env, s.ring_records));
  o.Set("ranges", Napi::Number::New(env, s.nranges));
  o.Set("apiVersion", Napi::Number::New(env, s.api_version));
  return o;
}

// readRecords(max): Buffer of whole 112-byte records (empty when none queued); never blocks.
Napi::Value WriteTrap::ReadRecords(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Live(env, "readRecords");
  uint32_t max = info.Length() > 0 ? ToU32(env, info[0], "max", 1, kMaxReadRecords) : 256;
  std::vector<uint8_t> buf(static_cast<size_t>(max) * sizeof(introvisor_trap_record));
  ssize_t n = read(fd, buf.data(), buf.size());
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Buffer<uint8_t>::Copy(env, buf.data(), 0);
    ThrowErrno(env, "read", "write trap for QEMU pid " + std::to_string(pid_) + ": read", errno);
  }
  // The kernel returns whole records; anything else is a framing bug, not data to guess at.
  if (n % sizeof(introvisor_trap_record) != 0) {
    Napi::Error err = Napi::Error::New(env, "write trap for QEMU pid " + std::to_string(pid_) + ": read returned " +
                                                std::to_string(n) + " bytes, not a multiple of 112");
    err.Set("code", Napi::String::New(env, "EIO"));
    err.Set("step", Napi::String::New(env, "read"));
    throw err;
  }
  return Napi::Buffer<uint8_t>::Copy(env, buf.data(), static_cast<size_t>(n));
}

Napi::Value WriteTrap::Close(const Napi::CallbackInfo& info) {
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
  return info.Env().Undefined();
}
