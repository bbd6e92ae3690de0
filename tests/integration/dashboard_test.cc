// The dashboard in a real browser: headless Chromium loads GET / from a live
// daemon with two versions, runs the page's script against the daemon's JSON
// endpoints, and the rendered DOM must show the version table and the chart
// with data. A screenshot is left in the test's working directory.
#include "tests/integration/learning_fixture.h"

#include <chrono>
#include <filesystem>
#include <regex>
#include <thread>

#include "daemon/daemon.h"
#include "tests/integration/http_test_client.h"
#include "tests/support/subprocess.h"

namespace distilld::testing {
namespace {

std::string Chromium(const std::string& args) {
  return "chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
         "--disable-background-networking --disable-component-update --disable-sync "
         "--user-data-dir=" + args;
}

TEST_CASE("the dashboard renders versions, chart and events in headless Chromium") {
  TempDir dir;
  SyntheticTask task;
  TrainAndSave(task, {0, 1, 2}, dir.str("teacher.pt"), 1);
  TrainAndSave(task, {0, 1}, dir.str("student.pt"), 2);
  config::Config c = LearningConfig(dir);
  auto d = daemon::Daemon::Create(c);
  REQUIRE(d->Start().ok());
  TcpClient client(Loopback(d->tcp_port()));
  std::mt19937_64 rng(4);
  std::vector<float> x;
  std::vector<int64_t> y;
  task.Make(400, -1, rng, &x, &y);
  REQUIRE(client.Post("/v1/samples", SamplesJson(x, y)).status == 200);
  REQUIRE(client.Post("/v1/learner/rounds", "{}").status == 202);
  for (int i = 0; i < 400 && d->distiller()->Progress().rounds_completed < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  REQUIRE(d->distiller()->Progress().rounds_completed == 1);
  for (int i = 0; i < 20; ++i) client.Post("/v2/models/fashion/infer", Infer4x4(x.data(), "q"));

  const std::string url = "http://127.0.0.1:" + std::to_string(d->tcp_port()) + "/";
  ProcessResult dom = RunCommand(Chromium(dir.str("chrome-dom")) + " --virtual-time-budget=8000 --dump-dom " + url);
  INFO(dom.output.substr(0, 2000));
  REQUIRE(dom.exit_code == 0);
  // The script ran to the end of a refresh against live data.
  CHECK(dom.output.find("data-loaded=\"1\"") != std::string::npos);
  // Version table: both versions, the promoted one active with a roll-back
  // button on the retired first student.
  CHECK(dom.output.find("<td>v1</td>") != std::string::npos);
  CHECK(dom.output.find("<td>v2</td>") != std::string::npos);
  CHECK(dom.output.find("status-active") != std::string::npos);
  CHECK(dom.output.find("data-version=\"1\"") != std::string::npos);
  CHECK(dom.output.find("roll back") != std::string::npos);
  // Events list the swap, and the header names the active version.
  CHECK(dom.output.find("kind-swap") != std::string::npos);
  CHECK(dom.output.find("<b id=\"active\">v2</b>") != std::string::npos);
  // v2 carries its held-out accuracy (the chart plots the same numbers).
  CHECK(std::regex_search(dom.output, std::regex("<td>v2</td><td class=\"status-active\">active</td>.*?<td>[0-9]+\\.[0-9]{2}%</td>")));
  // The dumped DOM holds the page's script too, so every string below needs
  // rendered values (or markup the script cannot contain) to match.
  // The accuracy chart says what its y-axis is and which set v2 was scored on.
  CHECK(dom.output.find(">y: held-out accuracy, at evaluation time</span>") != std::string::npos);
  CHECK(std::regex_search(dom.output,
                          std::regex("<span data-testid=\"holdout-latest\">v2 evaluated on [0-9]+ held-out samples</span>")));
  // The per-class chart's caption: which classes have no held-out data (if
  // any), and that both bars come from the same held-out set.
  CHECK(std::regex_search(dom.output, std::regex("data-testid=\"perclass-caption\"><span( class=\"warn\")? data-testid=\""
                                                 "(no-holdout-data\">classes without held-out data: [0-9]|"
                                                 "all-classes-have-holdout-data\">every class shown has held-out data)")));
  CHECK(dom.output.find("data-testid=\"perclass-basis\">v2 and the version it replaced, on the same held-out set") !=
        std::string::npos);
  // v2's row: the held-out set it was evaluated on and its gate's checks.
  CHECK(std::regex_search(dom.output, std::regex("<td>v2</td><td class=\"status-active\">active</td>.*?"
                                                 "<td title=\"generation [0-9]+[^\"]*\">[0-9]+ samples</td>"
                                                 "<td class=\"gate-pass\" data-testid=\"gate-summary\" title=\"[^\"]*\">"
                                                 "([0-9]+)/\\1 checks passed</td>")));

  const std::string shot = std::filesystem::absolute("dashboard.png").string();
  ProcessResult png = RunCommand(Chromium(dir.str("chrome-shot")) +
                                 " --virtual-time-budget=8000 --window-size=1400,1100 --screenshot=" + shot + " " + url);
  CHECK(png.exit_code == 0);
  CHECK(std::filesystem::file_size(shot) > 10000);
  MESSAGE("screenshot: " << shot);
  d->Shutdown();
}

}  // namespace
}  // namespace distilld::testing
