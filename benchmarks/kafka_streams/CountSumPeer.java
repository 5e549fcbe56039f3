/*
 * The JVM peer of `streamscore bench`: per-card tumbling 5-minute count + sum(amount) in
 * Kafka Streams, the same job as the Quix Streams peer (benchmarks/peers.py).
 *
 *   scripts/kafka-streams-peer run --bootstrap B --topic IN --out-topic OUT --events N \
 *       --group G --state-dir DIR [--max-seconds S]
 *
 * Reads IN from the beginning (JSON values, the card id as the key, the Kafka timestamp as
 * the event time), keeps one window store in RocksDB without a changelog, and produces each
 * window once it closed (stream time past its end plus 5 s grace) to OUT as JSON
 * {"start", "end", "count", "amount_sum"}. Stops after N input records (or S seconds, or 30 s
 * without a record), prints progress to stderr and, last, one JSON line to stdout with the
 * fields benchmarks/peers.py prints: first, last, events, steady_events.
 */

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.time.Instant;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.state.WindowStore;

public final class CountSumPeer {
  static final double PROGRESS_EVERY_S = 2.0;
  static final double STALL_S = 30.0;

  /** A window's running count and sum, stored as 16 bytes. */
  static final class CountSum {
    long count;
    double sum;
  }

  static final class CountSumSerde implements Serde<CountSum> {
    @Override
    public Serializer<CountSum> serializer() {
      return (topic, agg) ->
          agg == null ? null : ByteBuffer.allocate(16).putLong(agg.count).putDouble(agg.sum).array();
    }

    @Override
    public Deserializer<CountSum> deserializer() {
      return (topic, data) -> {
        if (data == null) {
          return null;
        }
        ByteBuffer buf = ByteBuffer.wrap(data);
        CountSum agg = new CountSum();
        agg.count = buf.getLong();
        agg.sum = buf.getDouble();
        return agg;
      };
    }
  }

  /** Input records seen by the stream thread; read by the main thread. */
  static final class Counter {
    final long events;
    volatile long done;
    volatile double first;
    volatile double last;
    volatile double lastSeen;

    Counter(long events) {
      this.events = events;
    }

    void seen() {
      long n = done + 1; // only the one stream thread writes
      double now = now();
      if (n == 1) {
        first = now;
      }
      if (n == events) {
        last = now;
      }
      lastSeen = now;
      done = n;
    }
  }

  static double now() {
    Instant t = Instant.now();
    return t.getEpochSecond() + t.getNano() / 1e9;
  }

  static Map<String, String> parseArgs(String[] args) {
    Map<String, String> out = new LinkedHashMap<>();
    out.put("--max-seconds", "600");
    for (int i = 0; i + 1 < args.length; i += 2) {
      if (!args[i].startsWith("--")) {
        throw new IllegalArgumentException("expected a --flag, got " + args[i]);
      }
      out.put(args[i], args[i + 1]);
    }
    for (String required :
        new String[] {"--bootstrap", "--topic", "--out-topic", "--events", "--group", "--state-dir"}) {
      if (!out.containsKey(required)) {
        throw new IllegalArgumentException("missing " + required);
      }
    }
    return out;
  }

  public static void main(String[] argv) throws Exception {
    Map<String, String> args = parseArgs(argv);
    long events = Long.parseLong(args.get("--events"));
    double maxSeconds = Double.parseDouble(args.get("--max-seconds"));
    Counter counter = new Counter(events);
    ObjectMapper json = new ObjectMapper();
    Serde<CountSum> countSum = new CountSumSerde();

    Properties props = new Properties();
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, args.get("--group"));
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args.get("--bootstrap"));
    props.put(StreamsConfig.STATE_DIR_CONFIG, args.get("--state-dir"));
    // One thread in one process, as the Quix peer; its commit interval (5 s) too.
    props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
    props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 5000);
    props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");

    StreamsBuilder builder = new StreamsBuilder();
    builder.stream(args.get("--topic"), Consumed.with(Serdes.String(), Serdes.ByteArray()))
        .mapValues(value -> readAmount(json, value))
        .peek((key, amount) -> counter.seen())
        .groupByKey(Grouped.with(Serdes.String(), Serdes.Double()))
        .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofMinutes(5), Duration.ofSeconds(5)))
        .aggregate(
            CountSum::new,
            (key, amount, agg) -> {
              agg.count += 1;
              agg.sum += amount;
              return agg;
            },
            Materialized.<String, CountSum, WindowStore<Bytes, byte[]>>as("count-sum")
                .withKeySerde(Serdes.String())
                .withValueSerde(countSum)
                .withLoggingDisabled())
        .suppress(
            Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded().withLoggingDisabled()))
        .toStream()
        .map(
            (window, agg) -> {
              Map<String, Object> out = new LinkedHashMap<>();
              out.put("start", window.window().start());
              out.put("end", window.window().end());
              out.put("count", agg.count);
              out.put("amount_sum", agg.sum);
              return KeyValue.pair(window.key(), writeJson(json, out));
            })
        .to(args.get("--out-topic"), Produced.with(Serdes.String(), Serdes.ByteArray()));

    AtomicReference<Throwable> failure = new AtomicReference<>();
    KafkaStreams streams = new KafkaStreams(builder.build(), props);
    streams.setUncaughtExceptionHandler(
        exc -> {
          failure.compareAndSet(null, exc);
          return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
    double started = now();
    double giveUp = started + maxSeconds;
    double nextReport = started + PROGRESS_EVERY_S;
    streams.start();
    while (true) {
      double t = now();
      long done = counter.done;
      if (done >= events || t >= giveUp || failure.get() != null) {
        break;
      }
      if (streams.state() == KafkaStreams.State.ERROR
          || streams.state() == KafkaStreams.State.NOT_RUNNING) {
        break;
      }
      double quietSince = done == 0 ? started : counter.lastSeen;
      if (t - quietSince >= STALL_S) {
        System.err.printf("  [kafka-streams] no record for %.0f s; stopping%n", STALL_S);
        break;
      }
      if (t >= nextReport) {
        nextReport += PROGRESS_EVERY_S;
        double rate = done / Math.max(1e-9, t - (done == 0 ? t : counter.first));
        System.err.printf("  [kafka-streams] %,d/%,d events, %,.0f ev/s%n", done, events, rate);
      }
      Thread.sleep(10);
    }
    // Stopped before the N-th record (time limit, stall): the last record seen ends the span.
    double last = counter.last > 0 ? counter.last : counter.lastSeen;
    long done = counter.done;
    streams.close(Duration.ofSeconds(30));
    if (failure.get() != null) {
      System.err.println("kafka-streams peer failed: " + failure.get());
      failure.get().printStackTrace();
      System.exit(1);
    }
    // The first record's own processing is not in the steady span (as for the Quix peer).
    Map<String, Object> result = new LinkedHashMap<>();
    result.put("first", counter.first);
    result.put("last", last);
    result.put("events", done);
    result.put("steady_events", Math.max(0, done - 1));
    System.out.println(json.writeValueAsString(result));
    System.out.flush();
    System.exit(0);
  }

  static double readAmount(ObjectMapper json, byte[] value) {
    try {
      JsonNode node = json.readTree(value);
      return node.get("amount").asDouble();
    } catch (java.io.IOException exc) {
      throw new IllegalArgumentException("input value is not JSON: " + exc.getMessage(), exc);
    }
  }

  static byte[] writeJson(ObjectMapper json, Map<String, Object> value) {
    try {
      return json.writeValueAsBytes(value);
    } catch (java.io.IOException exc) {
      throw new IllegalStateException(exc);
    }
  }
}
