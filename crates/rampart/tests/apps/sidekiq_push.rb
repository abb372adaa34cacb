# Pushes jobs 0...N (ARGV[0]) of CountJob through REDIS_URL, one push each, as an application
# enqueues them. Prints the id of every push Redis acknowledged, one a line ("acked ID"), and
# one line per push that raised ("failed ID: error"), so a test can compare what was
# acknowledged with what ran. Exits 0 even if some pushes failed.
$stdout.sync = true
require "sidekiq"
require_relative "sidekiq_jobs"

n = Integer(ARGV.fetch(0))
pause = Float(ARGV.fetch(1, "0"))
n.times do |id|
  begin
    jid = Sidekiq::Client.push("class" => CountJob, "args" => [id], "retry" => false)
    if jid
      puts "acked #{id}"
    else
      puts "failed #{id}: push returned nil"
    end
  rescue StandardError => e
    puts "failed #{id}: #{e.class}: #{e.message}"
  end
  sleep pause if pause > 0
end
puts "pushed"
