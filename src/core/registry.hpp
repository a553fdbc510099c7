// Queues and channels by id (internal).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace subinterp::detail {

// The states of one kind (queues, channels) by id, for find() and
// list_all(). Holds none of them alive: a state lives while handles do, and
// its destructor calls remove(). Ids count up from 1 and are never reused.
template <class State>
class Registry {
 public:
  // Makes State(id, args...) and registers it.
  template <class... Args>
  std::shared_ptr<State> create(Args&&... args) {
    std::lock_guard lock(mu_);
    std::int64_t id = next_id_++;
    auto state = std::make_shared<State>(id, std::forward<Args>(args)...);
    states_[id] = state;
    return state;
  }

  // The live state with this id, or null.
  std::shared_ptr<State> find(std::int64_t id) {
    std::lock_guard lock(mu_);
    auto it = states_.find(id);
    return it == states_.end() ? nullptr : it->second.lock();
  }

  // Ids of the live states, in order.
  std::vector<std::int64_t> ids() {
    std::vector<std::int64_t> ids;
    {
      std::lock_guard lock(mu_);
      for (auto& [id, weak] : states_) {
        if (!weak.expired()) ids.push_back(id);
      }
    }
    std::sort(ids.begin(), ids.end());
    return ids;
  }

  std::vector<std::shared_ptr<State>> live() {
    std::vector<std::shared_ptr<State>> states;
    std::lock_guard lock(mu_);
    for (auto& [id, weak] : states_) {
      if (auto state = weak.lock()) states.push_back(std::move(state));
    }
    return states;
  }

  // Forgets `id`: always with `even_if_live`, else only once its state is
  // gone (so a destructor racing a newer registration removes nothing).
  void remove(std::int64_t id, bool even_if_live) {
    std::lock_guard lock(mu_);
    auto it = states_.find(id);
    if (it != states_.end() && (even_if_live || it->second.expired())) states_.erase(it);
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::int64_t, std::weak_ptr<State>> states_;
  std::int64_t next_id_ = 1;
};

}  // namespace subinterp::detail
