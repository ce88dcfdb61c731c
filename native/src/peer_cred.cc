// Who is at the other end of a connected unix socket: the pid, uid and gid the
// kernel recorded when the peer connected (SO_PEERCRED), which Node does not
// expose. The control socket records them with every operator action.
#include "peer_cred.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>

// peerCredentials(fd) -> { pid, uid, gid }; throws for an fd that is not a
// connected unix socket.
Napi::Value PeerCredentials(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "peerCredentials(fd: number)");
  double d = info[0].As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 2147483647.0 || d != static_cast<double>(static_cast<int>(d)))
    throw Napi::RangeError::New(env, "peerCredentials: fd must be a whole number from 0 to 2^31-1");
  int fd = static_cast<int>(d);
  int domain = 0;
  socklen_t dlen = sizeof(domain);
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dlen) != 0)
    throw Napi::Error::New(env, "peerCredentials: fd " + std::to_string(fd) + ": " + strerror(errno));
  if (dlen != sizeof(domain) || domain != AF_UNIX)
    throw Napi::Error::New(env, "peerCredentials: fd " + std::to_string(fd) + " is not a unix socket");
  struct ucred cred;
  std::memset(&cred, 0, sizeof(cred));
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
    throw Napi::Error::New(env, "peerCredentials: fd " + std::to_string(fd) + ": " + strerror(errno));
  if (len != sizeof(cred)) throw Napi::Error::New(env, "peerCredentials: short SO_PEERCRED answer");
  Napi::Object out = Napi::Object::New(env);
  out.Set("pid", Napi::Number::New(env, static_cast<double>(cred.pid)));
  out.Set("uid", Napi::Number::New(env, static_cast<double>(cred.uid)));
  out.Set("gid", Napi::Number::New(env, static_cast<double>(cred.gid)));
  return out;
}
