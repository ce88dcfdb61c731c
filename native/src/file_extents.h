#pragma once
#include <napi.h>

Napi::Value FileDataExtents(const Napi::CallbackInfo& info);
