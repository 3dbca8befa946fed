# Enqueues and takes Sidekiq jobs with the real library; prints Sidekiq::Queue#latency as JSON.
# Usage: ruby sidekiq_latency.rb PORT QUEUE push GAP_SECONDS | latency | take
#   push:    pushes a job, waits GAP_SECONDS, pushes another (the client LPUSHes)
#   take:    takes the next job as a Sidekiq process does (BasicFetch: BRPOP)
# Each prints {"latency": Sidekiq::Queue#latency, "at": the time it was measured, "size": …}.
require "json"
require "sidekiq"
require "sidekiq/api"
require "sidekiq/fetch"

port, queue, action, gap = ARGV
Sidekiq.configure_client { |config| config.redis = { url: "redis://127.0.0.1:#{port}/0" } }
Sidekiq.logger.level = Logger::WARN
# redis-rb 4.8 warns about calls Sidekiq 6.4 makes; they are not what this script tests.
Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)

def push(queue, n)
  Sidekiq::Client.push("class" => "LatencyJob", "queue" => queue, "args" => [n])
end

taken = nil
case action
when "push"
  push(queue, 1)
  sleep(Float(gap))
  push(queue, 2)
when "take"
  work = Sidekiq::BasicFetch.new(queues: [queue]).retrieve_work
  taken = JSON.parse(work.job)["args"] if work
when "latency"
else
  abort "unknown action #{action}"
end
q = Sidekiq::Queue.new(queue)
latency = q.latency
puts JSON.generate(latency: latency, at: Time.now.to_f, size: q.size, taken: taken)
