# Ruby's redis gem (the client Sidekiq uses) over a TLS listener as a proxy user (AUTH user
# pass, sent by the gem from the URL): plain commands, a pipeline, MULTI/EXEC, a blocking pop
# woken by another client, SUBSCRIBE and a message, and NOPERM as the gem's own
# Redis::CommandError, after which the connection still serves. Keys and channels are under
# "app:". Prints "ok" last.
# Usage: ruby tls_redis_rb.rb PORT CA USER PASSWORD
require "redis"

port, ca, user, password = ARGV
def connect(port, ca, user, password)
  Redis.new(url: "rediss://#{user}:#{password}@127.0.0.1:#{port}/0", ssl_params: { ca_file: ca },
            timeout: 10)
end
r = connect(port, ca, user, password)
raise "whoami: #{r.call('ACL', 'WHOAMI')}" unless r.call("ACL", "WHOAMI") == user
r.del("app:s", "app:n", "app:q")
raise "set" unless r.set("app:s", "v") == "OK"
raise "get" unless r.get("app:s") == "v"
raise "incr" unless r.incr("app:n") == 1
res = r.pipelined do |p|
  50.times { |i| p.set("app:p#{i}", i) }
  p.mget((0...50).map { |i| "app:p#{i}" })
end
raise "pipeline: #{res.last.inspect}" unless res.last == (0...50).map(&:to_s)
res = r.multi do |m|
  m.incr("app:n")
  m.incr("app:n")
  m.get("app:n")
end
raise "multi: #{res.inspect}" unless res == [2, 3, "3"]

other = connect(port, ca, user, password)
pusher = Thread.new { sleep 0.3; other.lpush("app:q", "job") }
got = r.blpop("app:q", timeout: 10)
raise "blpop: #{got.inspect}" unless got == ["app:q", "job"]
pusher.join

sub = connect(port, ca, user, password)
message = nil
listener = Thread.new do
  sub.subscribe_with_timeout(10, "app:chan") do |on|
    on.subscribe { other.publish("app:chan", "hello") }
    on.message do |_ch, m|
      message = m
      sub.unsubscribe
    end
  end
end
listener.join
raise "message: #{message.inspect}" unless message == "hello"

[-> { r.get("other:key") }, -> { r.flushall }].each do |bad|
  begin
    bad.call
    raise "no NOPERM"
  rescue Redis::CommandError => e
    raise "not NOPERM: #{e.message}" unless e.message.start_with?("NOPERM")
  end
end
raise "ping" unless r.ping == "PONG"
puts "passed"
puts "ok"
