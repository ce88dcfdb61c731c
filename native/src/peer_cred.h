#pragma once
#include <napi.h>

Napi::Value PeerCredentials(const Napi::CallbackInfo& info);
