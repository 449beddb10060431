#!/usr/bin/env python3
"""Proxies: hauld ignores the proxy variables of its environment (with
them, libcurl would connect to the proxy, and the address check on each
connection would see the proxy instead of the target), and goes through a
proxy only when PROXY names one; with private addresses refused, a proxy
must be declared trusted to enforce the egress policy (PROXY_TRUSTED) or
hauld refuses to start.

The proxy is tests/fake_origin.py's ProxyRecorder: a loopback forwarding
proxy that records every request it is asked to carry."""

import os
import subprocess

import hauldtest
from fake_origin import ProxyRecorder

ENV_PROXIES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
EX_CONFIG = 78


class ProxyTest(hauldtest.HauldTestCase):
    start_daemon = False

    def setUp(self):
        super().setUp()
        self.proxy = ProxyRecorder().start()
        self.addCleanup(self.proxy.stop)

    def three_files(self, tag):
        names = ["%s-%d.png" % (tag, i) for i in range(3)]
        return names, [self.file_url(n, size=3000 + i) for i, n in enumerate(names)]

    def assert_files(self, d, job, names):
        items = sorted(d.items(job["id"]), key=lambda it: it["index"])
        self.assertEqual(len(items), len(names))
        for i, (item, name) in enumerate(zip(items, names)):
            self.assert_item_file(item, name, size=3000 + i, daemon=d)

    def refused_start(self, env, args=()):
        """Start hauld with env and wait for it to exit; (status, log)."""
        d = hauldtest.Daemon(env, args=args, start=False)
        self.addCleanup(d.cleanup)
        d.spawn()
        try:
            code = d.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.fail("hauld started with %r\n%s" % (env, d.log_tail()))
        d.stop()
        return code, d.log_text()

    def test_environment_proxies_are_ignored(self):
        """Every proxy variable of the environment names the recorder: no
        request reaches it, the files come straight from the origin."""
        d = self.new_daemon({k: self.proxy.url for k in ENV_PROXIES})
        names, urls = self.three_files("direct")
        job = self.run_job({"urls": urls}, daemon=d)
        self.assertEqual(job["state"], "succeeded", job)
        self.assert_files(d, job, names)
        self.assertEqual(self.proxy.count(), 0, self.proxy.requests())
        self.assertEqual(self.origin.count(), 3)

    def test_environment_proxy_does_not_hide_a_private_target(self):
        """With private addresses refused, a loopback target is refused even
        though the environment names a proxy that could reach it: the check
        sees the target, and the proxy gets nothing."""
        env = {k: self.proxy.url for k in ENV_PROXIES}
        env["ALLOW_PRIVATE_ADDRESSES"] = "false"
        d = self.new_daemon(env)
        names, urls = self.three_files("private")
        job = self.run_job({"urls": urls}, daemon=d)
        self.assertEqual(job["state"], "failed", job)
        for item in d.items(job["id"]):
            self.assert_item_error(item, "blocked_address")
        self.assertEqual(self.proxy.count(), 0, self.proxy.requests())
        self.assertEqual(self.origin.count(), 0)
        self.assertFalse(os.path.exists(os.path.join(d.download_dir, job["id"])))

    def test_trusted_proxy_carries_every_request(self):
        """PROXY with PROXY_TRUSTED=true and private addresses refused:
        every download goes through the proxy (whose own loopback address
        is not refused), and the environment's proxies are not used."""
        other = ProxyRecorder().start()
        self.addCleanup(other.stop)
        env = {k: other.url for k in ENV_PROXIES}
        env.update({"PROXY": self.proxy.url, "PROXY_TRUSTED": "true", "ALLOW_PRIVATE_ADDRESSES": "false"})
        d = self.new_daemon(env)
        names, urls = self.three_files("proxied")
        job = self.run_job({"urls": urls}, daemon=d)
        self.assertEqual(job["state"], "succeeded", job)
        self.assert_files(d, job, names)
        seen = self.proxy.requests()
        self.assertEqual(sorted(r["target"] for r in seen), sorted(urls), seen)
        self.assertTrue(all(r["method"] == "GET" for r in seen), seen)
        self.assertEqual(other.count(), 0, other.requests())
        self.assertEqual(self.origin.count(), 3)  # from the proxy

    def test_proxy_with_private_addresses_allowed_needs_no_trust(self):
        """With ALLOW_PRIVATE_ADDRESSES=true there is no policy to enforce:
        PROXY alone starts, and carries the downloads."""
        d = self.new_daemon({"PROXY": self.proxy.url})
        names, urls = self.three_files("allowed")
        job = self.run_job({"urls": urls}, daemon=d)
        self.assertEqual(job["state"], "succeeded", job)
        self.assertEqual(self.proxy.count(), 3, self.proxy.requests())

    def test_proxy_password_is_sent_and_not_shown(self):
        """user:password in PROXY goes to the proxy as Proxy-Authorization
        and GET /v1/config shows it masked."""
        url = self.proxy.url.replace("http://", "http://fetcher:s3cret@")
        d = self.new_daemon({"PROXY": url, "PROXY_TRUSTED": "true"})
        names, urls = self.three_files("auth")
        job = self.run_job({"urls": urls[:1]}, daemon=d)
        self.assertEqual(job["state"], "succeeded", job)
        seen = self.proxy.requests()
        self.assertEqual(len(seen), 1, seen)
        self.assertEqual(seen[0]["headers"].get("proxy-authorization"), "Basic ZmV0Y2hlcjpzM2NyZXQ=")
        status, _, cfg = d.get("/v1/config")
        self.assertEqual(status, 200, cfg)
        self.assertEqual(cfg["PROXY"], "http://fetcher:***@127.0.0.1:%d" % self.proxy.port)
        self.assertEqual(cfg["PROXY_TRUSTED"], "true")
        self.assertNotIn("s3cret", repr(cfg))

    def test_untrusted_proxy_with_private_addresses_refused_does_not_start(self):
        """PROXY without PROXY_TRUSTED while private addresses are refused:
        exit 78 with a message saying why and how to say the proxy is
        trusted; --check-config says the same."""
        env = {"PROXY": self.proxy.url, "ALLOW_PRIVATE_ADDRESSES": "false"}
        for args in ((), ("--check-config",)):
            code, log = self.refused_start(env, args)
            self.assertEqual(code, EX_CONFIG, log)
            self.assertIn("PROXY", log)
            self.assertIn("must enforce the egress policy", log)
            self.assertIn("PROXY_TRUSTED=true", log)
        env["PROXY_TRUSTED"] = "false"
        code, log = self.refused_start(env, ("--check-config",))
        self.assertEqual(code, EX_CONFIG, log)
        self.assertEqual(self.proxy.count(), 0)

    def test_bad_proxy_values(self):
        for value in ("ftp://127.0.0.1:21", "127.0.0.1:3128", "http://", "http://127.0.0.1:3128/path",
                      "socks4://127.0.0.1:1080", "http://a b:1"):
            code, log = self.refused_start({"PROXY": value, "PROXY_TRUSTED": "true"}, ("--check-config",))
            self.assertEqual(code, EX_CONFIG, "%s\n%s" % (value, log))
            self.assertIn("PROXY: must be http://host:port", log, value)

    def test_reload_keeps_the_settings_when_the_proxy_is_not_trusted(self):
        """A reload that would add an untrusted proxy is refused: the
        previous settings stay and downloads still go direct."""
        # the file decides ALLOW_PRIVATE_ADDRESSES: the environment would win over it
        d = hauldtest.Daemon({"ALLOW_PRIVATE_ADDRESSES": None}, start=False)
        conf = os.path.join(d.tmp, "hauld.conf")
        with open(conf, "w") as f:
            f.write("ALLOW_PRIVATE_ADDRESSES=true\n")
        d.args = ["--config", conf]  # after the harness's --config /dev/null: the last one counts
        self._daemons.append(d)
        self.addCleanup(d.stop)
        d.start()
        with open(conf, "w") as f:
            f.write("ALLOW_PRIVATE_ADDRESSES=false\nPROXY=%s\n" % self.proxy.url)
        d.reload()
        d.wait_for(lambda: "reload failed" in d.log_text(), what="the reload refused")
        self.assertIn("must enforce the egress policy", d.log_text())
        names, urls = self.three_files("reload")
        job = self.run_job({"urls": urls}, daemon=d)
        self.assertEqual(job["state"], "succeeded", job)
        self.assertEqual(self.proxy.count(), 0)


if __name__ == "__main__":
    hauldtest.main()
