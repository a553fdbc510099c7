// One core per process: the marker by which copies of the core find each
// other, and the checks behind require_core_build().
//
// A process must hold one core (one registry of interpreters, queues and
// pools). The dynamic loader gives one copy to everyone who asks for the
// same SONAME; what it cannot prevent is two *different* copies: a host with
// the static core whose interpreters import the extension, or two releases
// with different SONAMEs. Each copy exports `subinterp_core_marker_v1` (a
// static host exports it from the executable), finds the others' through the
// loader, and the first to be used claims the process; the others refuse.
#include <dlfcn.h>
#include <link.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "subinterp/subinterp.hpp"

extern "C" {
// The layout is shared by every release that has this marker: only append.
struct subinterp_core_marker {
  unsigned layout;    // 1
  int claimed;        // set (atomically) by the copy that serves the process
  const char* build;  // SUBINTERP_BUILD_ID of this copy
};
// This copy refers to its own marker by a hidden name: the exported one may
// be interposed by another copy's (a static host exports its marker from the
// executable, which comes first in the loader's search).
__attribute__((visibility("hidden"))) subinterp_core_marker subinterp_core_own_marker = {
    1, 0, SUBINTERP_BUILD_ID};
extern SUBINTERP_API subinterp_core_marker subinterp_core_marker_v1
    __attribute__((alias("subinterp_core_own_marker")));
}

namespace subinterp {
namespace detail {
namespace {

std::string file_of(const void* address) {
  Dl_info info{};
  link_map* map = nullptr;
  if (address == nullptr ||
      dladdr1(address, &info, reinterpret_cast<void**>(&map), RTLD_DL_LINKMAP) == 0) {
    return "(unknown file)";
  }
  if (map != nullptr && (map->l_name == nullptr || map->l_name[0] == '\0')) {
    // The program itself (a host with the static core): dladdr gives argv[0].
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) return std::string(exe, static_cast<std::size_t>(n));
  }
  return info.dli_fname != nullptr && info.dli_fname[0] != '\0' ? info.dli_fname
                                                                  : "(unknown file)";
}

int collect_object(dl_phdr_info* info, std::size_t, void* data) {
  static_cast<std::vector<std::string>*>(data)->push_back(info->dlpi_name ? info->dlpi_name : "");
  return 0;
}

// The markers of the other copies of the core loaded in this process.
std::vector<subinterp_core_marker*> other_markers() {
  std::vector<std::string> objects;
  dl_iterate_phdr(collect_object, &objects);  // no dlopen() while it holds its lock
  std::vector<subinterp_core_marker*> found;
  for (const std::string& name : objects) {
    // The program itself has an empty name; dlopen(nullptr) searches its
    // global scope, where a static host's exported marker is.
    void* handle = dlopen(name.empty() ? nullptr : name.c_str(), RTLD_LAZY | RTLD_NOLOAD);
    if (handle == nullptr) continue;
    auto* marker = static_cast<subinterp_core_marker*>(dlsym(handle, "subinterp_core_marker_v1"));
    dlclose(handle);
    if (marker == nullptr || marker == &subinterp_core_own_marker) continue;
    bool known = false;
    for (auto* m : found) known = known || m == marker;
    if (!known) found.push_back(marker);
  }
  return found;
}

std::string describe(const subinterp_core_marker* marker) {
  std::string build = marker->layout >= 1 && marker->build != nullptr ? marker->build : "?";
  return file_of(marker) + " (" + build + ")";
}

// Empty once this copy serves the process; otherwise why it may not.
const std::string& claim_result() {
  static std::once_flag once;
  static std::string* refusal = new std::string();  // never destroyed
  std::call_once(once, [] {
    for (auto* other : other_markers()) {
      if (__atomic_load_n(&other->claimed, __ATOMIC_ACQUIRE) != 0) {
        *refusal = "two copies of the subinterp core in one process: " + describe(other) +
                   " serves it, and " + describe(&subinterp_core_own_marker) +
                   " was loaded too. A process can have one registry of interpreters, "
                   "queues and pools: link the host against the shared libsubinterp that "
                   "the subinterp package uses, and build both from the same release "
                   "(a host linked with the static core cannot import subinterp)";
        return;
      }
    }
    __atomic_store_n(&subinterp_core_own_marker.claimed, 1, __ATOMIC_RELEASE);
  });
  return *refusal;
}

}  // namespace

void require_single_core() {
  const std::string& refusal = claim_result();
  if (!refusal.empty()) throw Error(refusal);
}

void require_core_build(const char* expected_build, const void* user_address) {
  if (expected_build == nullptr || std::strcmp(expected_build, core_build()) != 0) {
    throw Error(file_of(user_address) + " was built for " +
                (expected_build ? expected_build : "?") +
                ", but the subinterp core in this process, " + core_path() + ", is " +
                core_build() +
                ". A process can have one core: build the host and the extension from the "
                "same release, and load one libsubinterp");
  }
  require_single_core();
}

}  // namespace detail

const char* core_build() noexcept { return subinterp_core_own_marker.build; }

std::string core_path() { return detail::file_of(&subinterp_core_own_marker); }

}  // namespace subinterp
