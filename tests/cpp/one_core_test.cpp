// One core per process: this program links libsubinterp as a C++ host does,
// and the subinterp package that its interpreters import uses the same core.
// One registry of interpreters, one queue id space, one pool set.
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "python_env.hpp"
#include "subinterp/subinterp.hpp"

namespace subinterp_test {
namespace {

using subinterp::Interpreter;
using subinterp::Pool;
using subinterp::PoolOptions;
using subinterp::Queue;
using subinterp::Value;

Value call(Interpreter& interp, const char* name, std::vector<Value> args = {}) {
  return interp.call(Value::function_ref("__main__", name), Value::tuple(std::move(args)),
                     Value());
}

// Keys and values of a Dict value with int keys and str values.
std::map<std::int64_t, std::string> int_str_dict(const Value& v) {
  EXPECT_EQ(v.kind(), Value::Kind::Dict);
  std::map<std::int64_t, std::string> out;
  const auto& items = v.items();
  for (std::size_t i = 0; i + 1 < items.size(); i += 2) {
    out[items[i].as_int()] = items[i + 1].as_string();
  }
  return out;
}

constexpr const char* kPackageSide = R"(
import subinterp

def seen():
    return {i.id: i.whence for i in subinterp.list_all()}

def exchange(qid):
    q = subinterp.Queue(qid)
    got = q.get(timeout=10)
    q.put(('python saw', got))
    return q.qsize()

kept = []

def make_queue_and_interp():
    q = subinterp.create_queue()
    q.put('made by python')
    interp = subinterp.create()
    interp.exec('x = 6 * 7')
    kept.extend([q, interp])  # their Python objects keep them open
    return q.id, interp.id
)";

TEST(OneCore, ThePackageSeesTheHostsInterpretersQueuesAndPools) {
  Interpreter a = Interpreter::create();
  Interpreter b = Interpreter::create();
  PoolOptions options;
  options.max_workers = 1;
  Pool pool(options);
  // The worker's interpreter exists once a task has run.
  EXPECT_EQ(pool.submit(Value::function_ref("math", "sqrt"), Value::tuple({Value::from_int(4)}))
                .get(30.0)
                .as_double(),
            2.0);
  std::vector<std::int64_t> workers = pool.interpreter_ids();
  ASSERT_EQ(workers.size(), 1u);

  a.exec(kPackageSide);
  auto seen = int_str_dict(call(a, "seen"));
  EXPECT_EQ(seen[0], "runtime init");
  for (std::int64_t id : {a.id(), b.id(), workers[0]}) {
    ASSERT_TRUE(seen.count(id)) << "interpreter " << id << " not listed by subinterp.list_all()";
    EXPECT_EQ(seen[id], "subinterp module") << id;
  }

  // The same queue by id, both ways.
  Queue q = Queue::create();
  q.put(Value::from_str("from the host"));
  EXPECT_EQ(call(a, "exchange", {Value::from_int(q.id())}).as_int(), 1);
  Value reply = q.get(10.0).value;
  ASSERT_EQ(reply.kind(), Value::Kind::Tuple);
  EXPECT_EQ(reply.items()[0].as_string(), "python saw");
  EXPECT_EQ(reply.items()[1].as_string(), "from the host");
  pool.shutdown();
}

TEST(OneCore, TheHostUsesWhatThePackageMade) {
  Interpreter a = Interpreter::create();
  a.exec(kPackageSide);
  Value made = call(a, "make_queue_and_interp");
  ASSERT_EQ(made.kind(), Value::Kind::Tuple);
  std::int64_t qid = made.items()[0].as_int();
  std::int64_t iid = made.items()[1].as_int();

  Queue q = Queue::find(qid);
  EXPECT_EQ(q.get(10.0).value.as_string(), "made by python");
  Interpreter made_there = Interpreter::get(iid);
  EXPECT_EQ(made_there.whence(), subinterp::Whence::Subinterp);
  made_there.exec("assert x == 42");
  bool listed = false;
  for (auto& [id, whence] : subinterp::list_interpreters()) listed = listed || id == iid;
  EXPECT_TRUE(listed);
  // Closing it from the host is seen by the package.
  made_there.close();
  auto seen = int_str_dict(call(a, "seen"));
  EXPECT_FALSE(seen.count(iid));
}

TEST(OneCore, TheExtensionRunsOnThisProcesssCore) {
  Interpreter a = Interpreter::create();
  a.exec(
      "import subinterp, os\n"
      "def loaded():\n"
      "    with open('/proc/self/maps') as f:\n"
      "        return sorted({l.split()[-1] for l in f if 'libsubinterp' in l})\n");
  Value loaded = call(a, "loaded");
  ASSERT_EQ(loaded.items().size(), 1u) << "more than one libsubinterp mapped";
  // The file this program loaded is the one mapped (/proc shows real paths).
  char resolved[4096];
  ASSERT_NE(realpath(subinterp::core_path().c_str(), resolved), nullptr);
  EXPECT_EQ(loaded.items()[0].as_string(), resolved);
  EXPECT_NO_THROW(subinterp::require_core_build());
  EXPECT_NE(std::string(subinterp::core_build()).find(subinterp::version()), std::string::npos);
}

}  // namespace
}  // namespace subinterp_test
