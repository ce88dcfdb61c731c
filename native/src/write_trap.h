// The KVM write trap's control fd (kernel-patches/uapi/introvisor_trap.h) for
// one QEMU process: attach by pid, arm/disarm guest-physical ranges, read the
// log of refused writes. Everything the kernel does not do itself is checked
// here: argument ranges, record framing, fds closed exactly once.
#pragma once
#include <napi.h>

class WriteTrap : public Napi::ObjectWrap<WriteTrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  // new WriteTrap(qemuPid, ringRecords): attaches or throws an Error with
  // .code (errno name, or "ENOVMFD" when the process holds no KVM VM) and .step.
  explicit WriteTrap(const Napi::CallbackInfo& info);
  ~WriteTrap() override;

 private:
  Napi::Value GetFd(const Napi::CallbackInfo& info);
  Napi::Value GetVmFdNumber(const Napi::CallbackInfo& info);
  Napi::Value AddRange(const Napi::CallbackInfo& info);
  Napi::Value DelRange(const Napi::CallbackInfo& info);
  Napi::Value List(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value ReadRecords(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  int Live(const Napi::Env& env, const char* what) const;

  int fd_ = -1;
  int pid_ = 0;
  // The fd number of anon_inode:kvm-vm inside QEMU (for messages only).
  int remote_vm_fd_ = -1;
};
